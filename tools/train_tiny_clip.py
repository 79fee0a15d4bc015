"""Train the tiny CLIP test asset on synthetic captioned shapes and write it as an open_clip ``local-dir:`` folder.

    python tools/train_tiny_clip.py                       # writes tests/assets/tiny_clip/ (~7 min, one CPU thread)
    python tools/train_tiny_clip.py --steps 300 --out /tmp/tiny_clip   # a quick smoke run

The model is an open_clip ``CLIP`` built from the config below: a 4-layer ViT (32x32 pixels, 8-pixel patches,
width 64) and a 3-layer text transformer (width 32) over open_clip's bundled 49408-token BPE vocabulary, so
``open_clip.get_tokenizer("local-dir:...")`` gives the right tokenizer. It is trained with open_clip's
``ClipLoss`` on images from ``tools/tiny_clip_data.py`` captioned with the ``TRAIN_*`` templates only, then saved
in fp16 (``open_clip_model.safetensors`` + ``open_clip_config.json``). The script reloads the folder through
``open_clip.create_model_from_pretrained("local-dir:...")`` and prints zero-shot accuracy on fresh images
(another seed) with the colour-only / shape-only training templates and with the ``HELD_OUT_*`` wordings it never saw.
Everything is seeded: the same command on the same torch version writes the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_clip_data.py sits beside this script
from tiny_clip_data import (  # noqa: E402
    COLOURS,
    HELD_OUT_COLOUR_WORDINGS,
    HELD_OUT_SHAPE_WORDINGS,
    IMAGE_SIZE,
    SHAPES,
    TRAIN_COLOUR_TEMPLATES,
    TRAIN_SHAPE_TEMPLATES,
    make_shape_images,
    training_captions,
    zero_shot_accuracy,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "assets" / "tiny_clip"
TRAIN_SEED, VALID_SEED, EVAL_SEED = 0, 1, 1234

MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 4, "width": 64, "head_width": 16, "patch_size": 8},
    # vocab_size must stay 49408: the bundled BPE tokenizer (SimpleTokenizer) emits ids up to 49407.
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 3},
}
PREPROCESS_CFG = {
    "size": IMAGE_SIZE,
    "mean": list(OPENAI_DATASET_MEAN),
    "std": list(OPENAI_DATASET_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w, 3) -> normalised float (n, 3, h, w), as open_clip's preprocess does for these sizes."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train(steps: int, batch_size: int, pool_size: int, lr: float) -> open_clip.CLIP:
    torch.manual_seed(TRAIN_SEED)
    rng = np.random.default_rng(TRAIN_SEED)
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=MODEL_CFG["text_cfg"]["context_length"])
    loss_fn = open_clip.ClipLoss()

    pool = make_shape_images(pool_size, seed=TRAIN_SEED)
    pool_x = to_tensor(pool.images)
    valid = make_shape_images(240, seed=VALID_SEED)
    valid_x = to_tensor(valid.images)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98)
    )
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))),
    )

    start = time.time()
    for step in range(steps):
        model.train()
        idx = rng.integers(pool_size, size=batch_size)
        images = pool_x[idx]
        flip = torch.from_numpy(rng.uniform(size=batch_size) < 0.5)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        texts = tokenizer(training_captions(pool.colours[idx], pool.shapes[idx], rng))
        image_features, text_features, logit_scale = model(images, texts)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():  # as in CLIP: temperature capped at 100
            model.logit_scale.clamp_(0, math.log(100))
        if step % 200 == 0 or step == steps - 1:
            model.eval()
            colour = zero_shot_accuracy(
                model, tokenizer, valid_x, valid.colours, list(COLOURS), HELD_OUT_COLOUR_WORDINGS, "colour"
            )
            shape = zero_shot_accuracy(
                model, tokenizer, valid_x, valid.shapes, list(SHAPES), HELD_OUT_SHAPE_WORDINGS, "shape"
            )
            print(
                f"step {step:5d}  loss {loss.item():.3f}  scale {model.logit_scale.exp().item():5.1f}  "
                f"held-out colour {colour:.3f}  shape {shape:.3f}  ({time.time() - start:.0f}s)",
                flush=True,
            )
    model.eval()
    return model


def save_local_dir(model: torch.nn.Module, out: Path) -> None:
    """open_clip's ``local-dir:`` layout: ``open_clip_config.json`` (model_cfg, preprocess_cfg) + safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "open_clip_model.safetensors")
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")


def report(out: Path, n_images: int) -> dict[str, float]:
    """Reload ``out`` as open_clip does and score zero-shot accuracy on fresh images through its preprocess."""
    from PIL import Image

    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    batch = make_shape_images(n_images, seed=EVAL_SEED)
    x = torch.stack([preprocess(Image.fromarray(a)) for a in batch.images])
    tasks = {
        "colour": (batch.colours, list(COLOURS), TRAIN_COLOUR_TEMPLATES, HELD_OUT_COLOUR_WORDINGS, "colour"),
        "shape": (batch.shapes, list(SHAPES), TRAIN_SHAPE_TEMPLATES, HELD_OUT_SHAPE_WORDINGS, "shape"),
    }
    figures = {}
    print(f"\nzero-shot on {n_images} fresh images (seed {EVAL_SEED}), loaded from local-dir:{out}")
    for task, (labels, names, train_templates, held_out, slot) in tasks.items():
        chance = 1 / len(names)
        acc_train = zero_shot_accuracy(model, tokenizer, x, labels, names, train_templates, slot)
        acc_held = zero_shot_accuracy(model, tokenizer, x, labels, names, held_out, slot)
        print(f"  {task:6s}  chance {chance:.3f}  training templates {acc_train:.3f}  held-out wordings {acc_held:.3f}")
        for wording in held_out:
            acc = zero_shot_accuracy(model, tokenizer, x, labels, names, (wording,), slot)
            print(f"          held-out {wording!r:45s} {acc:.3f}")
        figures[f"{task}_train_templates"] = acc_train
        figures[f"{task}_held_out"] = acc_held
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=8000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.time()
    model = train(args.steps, args.batch_size, args.pool_size, args.lr)
    print(f"trained {args.steps} steps in {time.time() - start:.0f}s")
    save_local_dir(model, args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")
    report(args.out, n_images=600)


if __name__ == "__main__":
    main()
