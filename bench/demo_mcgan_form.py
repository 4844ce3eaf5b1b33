"""The demo's MCGAN in another form, evaluated as the demo evaluates it (with a finished demo's encoder).

Used to choose the demo's MCGAN form (bench/RESULTS.md, issue 21). The released form's numbers are
what `oncosynth demo` measured itself (DEMO_OUT/evaluation/metrics.json, before the change):

  OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/demo_mcgan_form.py --demo DEMO_OUT \
      --name batch-norm --options '{"d_kernel": 4, "leak": 0.2, "d_steps_per_g": 1, "norm": "batch"}' \
      --scratch /tmp/demo-ab
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oncosynth.data import load_dataset
from oncosynth.demo.pipeline import DEMO_GAN_STEPS, DEMO_SYNTHETIC_PER_CLASS, _real_arm_classifier
from oncosynth.generators import create_generator, generate_images
from oncosynth.metrics.evaluate import evaluate

KEYS = ("frd", "fid", "kid", "precision", "recall", "density", "coverage", "memorised_fraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a finished `oncosynth demo` folder")
    parser.add_argument("--name", required=True)
    parser.add_argument("--options", type=json.loads, default={}, help="cdcgan options as JSON")
    parser.add_argument("--steps", type=int, default=DEMO_GAN_STEPS)
    parser.add_argument("--scratch", type=Path, default=Path("demo-ab"))
    args = parser.parse_args()
    out = args.scratch / args.name
    dataset = load_dataset(args.demo / "phantom")
    started = time.process_time()
    gen = create_generator("cdcgan", width=16, size=64, batch_size=16, **args.options)
    gen.fit(dataset, out / "gan", steps=args.steps, seed=0, checkpoint_every=50, sample_every=50, progress=False)
    cpu = time.process_time() - started
    generate_images(out / "gan", out / "synthetic", n=DEMO_SYNTHETIC_PER_CLASS, class_names=dataset.classes, seed=0)
    metrics = evaluate(dataset.split("test"), out / "synthetic", train=dataset.split("train"),
                       feature_net=f"encoder:{_real_arm_classifier(args.demo / 'study')}", out=out / "evaluation",
                       label_from_name=True, frd_max_images=20, progress=False)
    overall = metrics["results"]["overall"]
    print(json.dumps({"name": args.name, "steps": args.steps, "options": args.options, "train_cpu_s": cpu,
                      **{k: overall.get(k) for k in KEYS}}))


if __name__ == "__main__":
    main()
