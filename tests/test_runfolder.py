"""The run folder `train` writes: its model card is made from what the folder records."""

from __future__ import annotations

import json

from sentitune.card import model_card
from sentitune.config import TrainConfig
from sentitune.layout import CARD, METRICS, RUN_CONFIG
from sentitune.splits import read_prepared


def test_the_model_card_is_made_from_the_run_config_and_metrics_written(trained_run, prepared):
    run_config = json.loads((trained_run / RUN_CONFIG).read_text())
    metrics = json.loads((trained_run / METRICS).read_text())
    prepared_data = read_prepared(TrainConfig(data=run_config["train"]["data"]))
    assert run_config["train"]["data"] == str(prepared)
    assert model_card(run_config, metrics, prepared_data) == (trained_run / CARD).read_text()
    # the card says what the record says: an edited record gives another card
    run_config["train"]["learning_rate"] = 0.125
    assert "AdamW at learning rate 0.125," in model_card(run_config, metrics, prepared_data)
