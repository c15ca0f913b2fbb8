"""`scenefit export-vllm` — what `vllm serve` needs to serve the three students as LoRA adapters.

    scenefit export-vllm --students runs/x/students --out runs/x/vllm.json
    scenefit export-vllm --students runs/x/students --out runs/x/vllm.json --probe 4
    scenefit export-vllm --demo --out runs/demo/vllm.json --merge runs/demo/merged
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scenefit.cli import app
from scenefit.cli.common import console, demo_students, escape, examples, fail


@app.command("export-vllm", epilog=examples(__doc__, "export-vllm"))
def export_vllm_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the serving spec (JSON: names, absolute paths, ranks, command) here.")],
    students: Annotated[Optional[Path], typer.Option("--students", help="Folder with one student adapter per criterion.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Use $DEMO_DIR/students (default runs/demo/students).")] = False,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model vLLM serves (default: the students' base_model).")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Served adapter names are PREFIX<criterion>.")] = "scenefit-",
    force: Annotated[bool, typer.Option("--force", help="Write the spec even for adapters vLLM cannot serve (with a warning).")] = False,
    probe: Annotated[int, typer.Option("--probe", min=0, help="Load each adapter on the base and refuse one that leaves the "
                                       "decision logits of N synthetic scenes unchanged (0 = skip; loads the model).")] = 0,
    device: Annotated[str, typer.Option("--device", help="torch device for --probe and --merge.")] = "cpu",
    merge: Annotated[Optional[Path], typer.Option("--merge", help="Merge each student into its base under DIR/<criterion> "
                                                  "(a plain checkpoint, one `vllm serve` each): serves students vLLM's "
                                                  "LoRA loader refuses, such as the demo's (a trained lm_head), at one "
                                                  "full model per student.", metavar="DIR")] = None,
) -> None:
    """Write what `vllm serve --enable-lora --lora-modules` needs for the three student adapters and print the command.

    Refuses adapters vLLM cannot serve: modules_to_save (e.g. a trained lm_head), vision-tower or
    other unsupported target modules, DoRA, biases, rank above 512. With --merge DIR each student
    is merged into its base instead and served as a model of its own (one command per student).
    """
    from scenefit.serve.vllm_export import VllmExportError, export_vllm

    if demo and students is not None:
        fail("give either --demo or --students, not both")
    if demo:
        students = demo_students()
    if students is None:
        fail("pass --students DIR (or --demo)")
    try:
        export = export_vllm(students, out, base=base, force=force, prefix=prefix, probe=probe, device=device,
                             merge=merge)
    except VllmExportError as e:
        fail(str(e))
        return
    if export.forced:
        for a in export.adapters:
            for problem in a.problems:
                console.print(f"[yellow]warning:[/] {escape(a.name)}: {escape(problem)}")
        console.print("[yellow]warning:[/] written with --force: vLLM will refuse the adapters listed above")
    console.print(f"wrote {out}")
    if export.merged:
        console.print(f"merged {len(export.merged)} student(s) into {escape(str(merge))}: one `vllm serve` each")
    for line in export.command_lines:
        print(line)
