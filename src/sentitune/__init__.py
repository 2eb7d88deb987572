"""sentitune: fine-tune BERT-family encoders for negative / neutral / positive sentiment of posts.

The public API mirrors the command line: one function per command.

    from sentitune import prepare, train, evaluate, Predictor
"""

__version__ = "0.1.0"

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")

__all__ = ["LABELS", "__version__", "prepare", "train", "evaluate", "Predictor"]


def __getattr__(name: str):
    # Lazy imports keep `import sentitune` and `sentitune --help` fast: torch loads only when used.
    if name == "prepare":
        from sentitune.prepare import prepare

        return prepare
    if name == "train":
        from sentitune.train import train

        return train
    if name == "evaluate":
        from sentitune.evaluate import evaluate

        return evaluate
    if name == "Predictor":
        from sentitune.scoring import Predictor

        return Predictor
    raise AttributeError(f"module 'sentitune' has no attribute {name!r}")
