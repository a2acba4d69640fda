"""``python -m attnfast.sample``: images from captions with a trained AttnGAN checkpoint.

    python -m attnfast.sample --checkpoint runs/shapes/gan.pt --caption "a large red circle in the center" --n 4 --attention
    python -m attnfast.sample --checkpoint runs/shapes/gan.pt --captions captions.txt --batch 64

PNGs are written by a worker thread while the next batch is generated. With ``--attention`` each
caption also gets the paper's figure: per attentional stage, the image and each word's attention.
"""
import argparse
import json
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

LOG = logging.getLogger("attnfast")


class SampleError(ValueError):
    pass


def read_captions(args) -> list[str]:
    captions = list(args.caption or [])
    if args.captions:
        path = Path(args.captions)
        if not path.is_file():
            raise FileNotFoundError(f"captions file not found: {path}")
        captions += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not captions:
        raise SampleError("no captions: pass --caption TEXT (repeatable) or --captions FILE")
    return captions


def encode_captions(captions: list[str], vocab, words_num: int) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """(N, words_num) ids padded with 0, (N,) lengths and the kept words of each caption.

    Unknown words become ``<unk>`` when the vocabulary has it, else they are dropped (the original
    AttnGAN drops them); either way one warning lists them. An empty caption is an error.
    """
    from attnfast.data import pad_captions, tokenize
    unknown: set[str] = set()
    ids, kept = [], []
    for text in captions:
        tokens = tokenize(text)
        if not tokens:
            raise SampleError(f"caption {text!r} has no words")
        row, words = [], []
        for token in tokens:
            if token in vocab and vocab.wordtoix[token] != 0:
                row.append(vocab.wordtoix[token])
                words.append(token)
            elif "<unk>" in vocab:
                unknown.add(token)
                row.append(vocab.wordtoix["<unk>"])
                words.append("<unk>")
            else:
                unknown.add(token)
        if not row:
            raise SampleError(f"caption {text!r} has no word the model knows")
        if len(row) > words_num:
            LOG.warning("attnfast.sample: caption %r has %d known words; keeping the first %d",
                        text, len(row), words_num)
            row, words = row[:words_num], words[:words_num]
        ids.append(row)
        kept.append(words)
    if unknown:
        action = "mapped to <unk>" if "<unk>" in vocab else "dropped"
        LOG.warning("attnfast.sample: words not in the vocabulary %s: %s", action, ", ".join(sorted(unknown)))
    padded, lens = pad_captions(ids, words_num)
    return padded, lens, kept


def load_generator(path, device: torch.device):
    """The EMA generator (eval mode), the frozen text encoder, the vocabulary and the config."""
    from attnfast.data import Vocabulary
    from attnfast.engine import checkpoint as ckpt
    from attnfast.trainer.common import build_text_encoder
    from attnfast.trainer.gan import build_generator
    state = ckpt.load(path, map_location=device, kind="gan")
    config = state["config"]
    vocab = Vocabulary.from_dict(state["vocab"])
    netG = build_generator(config)
    netG.load_state_dict(state["netG_ema"])
    text_encoder = build_text_encoder(config, len(vocab))
    text_encoder.load_state_dict(state["text_encoder"])
    return netG.to(device).eval(), text_encoder.to(device).eval(), vocab, config


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "caption"


@torch.no_grad()
def generate(netG, text_encoder, captions, cap_lens, noise, words_num: int, amp: str = "off"):
    """Images of every stage and attention maps for a batch (see G_NET.forward)."""
    from attnfast.engine.amp import autocast
    from attnfast.trainer.common import encode_text
    device = noise.device
    words, sentence = encode_text(text_encoder, captions.to(device), cap_lens, words_num)
    with autocast(amp, device):
        fakes, att_maps, _, _ = netG(noise, sentence.float(), words.float(), captions.to(device) == 0)
    return [f.float() for f in fakes], [a.float() for a in att_maps]


def sample(checkpoint, captions: list[str], out_dir, n: int = 1, batch: int = 16, seed: int = 0,
           attention: bool = False, device: torch.device | None = None, amp: str = "off",
           progress: bool = True) -> dict:
    from attnfast.data import to_uint8_images
    from attnfast.viz import attention_figure, save_png
    device = device or torch.device("cpu")
    if n < 1 or batch < 1:
        raise SampleError(f"--n and --batch must be >= 1, got {n} and {batch}")
    netG, text_encoder, vocab, config = load_generator(checkpoint, device)
    words_num = config["dataset"]["words_num"]
    ids, lens, kept = encode_captions(captions, vocab, words_num)
    jobs = [(c, k) for c in range(len(captions)) for k in range(n)]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(jobs), config["model"]["z_dim"], generator=generator)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, futures = [], []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as writer:
        bar = tqdm(total=len(jobs), desc="sample", unit="img", disable=not progress)
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            rows = torch.tensor([c for c, _ in chunk])
            fakes, att_maps = generate(netG, text_encoder, ids[rows], lens[rows],
                                       noise[start:start + len(chunk)].to(device), words_num, amp)
            pixels = to_uint8_images(fakes[-1].cpu())
            for (c, k), image in zip(chunk, pixels):
                path = out_dir / f"{c:04d}_{_slug(captions[c])}_{k}.png"
                futures.append(writer.submit(save_png, image, path))
                written.append(str(path))
                if attention and k == 0 and att_maps:
                    j = chunk.index((c, k))
                    count = len(kept[c])
                    figure = attention_figure([f[j].cpu() for f in fakes[1:]],
                                              [a[j, :count].cpu() for a in att_maps], kept[c])
                    path = out_dir / f"{c:04d}_{_slug(captions[c])}_attention.png"
                    futures.append(writer.submit(save_png, figure, path))
                    written.append(str(path))
            bar.update(len(chunk))
        bar.close()
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - started
    if attention and config["model"]["branch_num"] < 2:
        LOG.warning("attnfast.sample: a 1-stage generator has no word attention to draw")
    return {"images": len(jobs), "files": len(written), "out": str(out_dir), "seconds": elapsed,
            "images_per_s": len(jobs) / max(elapsed, 1e-9)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a GAN checkpoint (gan.pt)")
    parser.add_argument("--caption", action="append", help="a caption (repeatable)")
    parser.add_argument("--captions", help="a text file with one caption per line")
    parser.add_argument("--n", type=int, default=1, help="images per caption")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/samples")
    parser.add_argument("--attention", action="store_true", help="also draw the attention figures")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", nargs="?", const="bf16", default="off", choices=("off", "bf16", "fp16"))
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    from attnfast.trainer.common import pick_device
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = sample(args.checkpoint, read_captions(args), args.out, args.n, args.batch, args.seed,
                         args.attention, pick_device(args.device), args.amp, not args.no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.sample: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
