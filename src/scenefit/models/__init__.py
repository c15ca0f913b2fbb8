"""Loading Qwen2.5-VL bases and processors (:mod:`.loading`) and the packed vision-tower
attention (:mod:`.vision_attention`)."""
