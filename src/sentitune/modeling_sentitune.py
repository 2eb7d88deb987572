"""A sentitune run trained with mean pooling, for plain transformers (sentitune copies this file into the run
folder and names it in config.json's auto_map):

    from transformers import pipeline
    classify = pipeline("text-classification", model="RUN_DIR", trust_remote_code=True, top_k=None)

The encoder is the family named by `sentitune_encoder_type` (bert for the embedded MiniLM), its weights
under their standard names; the head (dropout + linear, the standard `classifier`) reads the mean of the
last hidden states over the post's tokens, padding excluded, exactly as sentitune does. The config's own
`model_type` makes loading without `trust_remote_code=True` fail instead of silently putting a random
pooler in front of the head. This file imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "sentitune-mean-pooled"
ENCODER_TYPE_KEY = "sentitune_encoder_type"
_OWN_KEYS = {"model_type", "auto_map", "architectures", "transformers_version", ENCODER_TYPE_KEY}


class SentituneMeanPooledConfig(PretrainedConfig):
    """The encoder's own configuration, flat, with the family it belongs to in `sentitune_encoder_type`."""

    model_type = MODEL_TYPE

    def encoder_config(self) -> PretrainedConfig:
        fields = {k: v for k, v in self.to_dict().items() if k not in _OWN_KEYS}
        return AutoConfig.for_model(getattr(self, ENCODER_TYPE_KEY), **fields)


class SentituneMeanPooledForSequenceClassification(PreTrainedModel):
    config_class = SentituneMeanPooledConfig
    base_model_prefix = "bert"  # set per instance to the encoder family's own prefix

    def __init__(self, config: SentituneMeanPooledConfig):
        super().__init__(config)
        encoder = AutoModel.from_config(config.encoder_config())
        if hasattr(encoder, "pooler"):
            encoder.pooler = None  # not trained, not saved: the head reads the mean of the tokens instead
        self.base_model_prefix = type(encoder).base_model_prefix
        setattr(self, self.base_model_prefix, encoder)
        rate = getattr(config, "classifier_dropout", None)
        self.dropout = torch.nn.Dropout(config.hidden_dropout_prob if rate is None else rate)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.base_model(**inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
