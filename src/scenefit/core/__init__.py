"""The vocabulary and small infrastructure every stage shares: criteria and labels, the sample
record, stage configuration, images and boxes, Parquet/JSON files written atomically, rows read
one bad row at a time, and the progress bar."""
