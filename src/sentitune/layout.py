"""The file names of the two folders sentitune's commands hand each other: the prepared folder (`prepare`
writes it, `train`, `baseline` and `evaluate` read it) and the run folder (`train` writes it, `export` adds
to it, every later command reads it). No other module spells them. Names only: importing this module
loads nothing else, so the command line and the settings (`--config RUN_DIR`) use it freely.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- the prepared folder

# On disk the validation split is `eval.*` (the walkthrough's name); in code and in metrics it is `val`.
SPLIT_FILES = {"train": "train", "val": "eval", "test": "test"}  # split in code -> file stem on disk
SPLIT_ALIASES = {"val": ("eval", "val", "validation")}  # stems accepted when reading a folder
SPLIT_EXTENSIONS = ("csv", "parquet", "jsonl", "tsv")
SPLIT_MARKER = "prepare_report.json"  # prepare's report, written last: the folder is complete
LABELS_FILE = "labels.json"  # the label set, in order (a prepared folder's: with its score boundaries)
SPLIT_LABELS = LABELS_FILE
REPORT = "report.html"  # the page for people, in a prepared folder, a run folder and an evaluation
# A split mixing people's labels with VADER's says which each row's is, so training can weigh them
LABEL_SOURCE_COLUMN = "label_source"
HUMAN_LABEL, WEAK_LABEL = "human", "vader"

# ----------------------------------------------------------------------------- the run folder

RUN_CONFIG = "run_config.json"  # the resolved settings, the data, the environment
METRICS = "metrics.json"  # written last: its presence marks a finished run (and a finished evaluation)
HISTORY = "history.jsonl"  # one line per validation
CARD = "README.md"  # the model card
CURVES = "training_curves.png"
CONFUSION = "confusion_matrix.png"
CHECKPOINTS = "checkpoints"  # the default place of a run's checkpoints, removed when it finishes
EXPORT_DIR = "onnx"  # `sentitune export`'s folder in a run folder
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
EXPORT_REPORT = "export_report.json"

# A run folder is a Hugging Face model folder too: transformers' own names, which the modules that load
# any model folder (a hub model, the embedded one, a checkpoint) also spell.
CONFIG = "config.json"  # the model config, with id2label and sentitune_pooling
TOKENIZER = "tokenizer.json"  # the fast tokenizer, which every run saves
TOKENIZER_CONFIG = "tokenizer_config.json"
WEIGHTS = "model.safetensors"
TRANSFORMERS_FILES = (CONFIG, TOKENIZER, TOKENIZER_CONFIG, WEIGHTS)

FINISHED_RUN = (METRICS, RUN_CONFIG, WEIGHTS)  # any of these: the folder already holds a run
