"""sentitune: fine-tune BERT-family encoders for negative / neutral / positive sentiment of posts.

The public API mirrors the command line: one function per command.

    from sentitune import prepare, train, evaluate, distill, select, Predictor
"""

__version__ = "0.1.0"

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")

# name -> the module that defines it; imported on first use, so `import sentitune` and `sentitune --help`
# stay fast (torch loads only when used)
_LAZY = {
    "prepare": "sentitune.prepare",
    "train": "sentitune.train",
    "evaluate": "sentitune.evaluate",
    "distill": "sentitune.distill",
    "select": "sentitune.select",
    "Predictor": "sentitune.scoring",
}

__all__ = ["LABELS", "__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'sentitune' has no attribute {name!r}")
    import importlib

    found = getattr(importlib.import_module(_LAZY[name]), name)
    # Importing `sentitune.train` made the package's `train` that module; the function replaces it, so
    # `sentitune.train(...)` works the second time too.
    globals()[name] = found
    return found
