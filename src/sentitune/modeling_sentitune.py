"""A sentitune run trained with mean pooling, for plain transformers (sentitune copies this file into the run
folder and names it in config.json's auto_map):

    from transformers import pipeline
    classify = pipeline("text-classification", model="RUN_DIR", trust_remote_code=True, top_k=None)

The encoder is the family named by `sentitune_encoder_type` (bert for the embedded MiniLM), its weights
under their standard names; the head (dropout + linear, the standard `classifier`) reads the mean of the
last hidden states over the post's tokens, padding excluded, exactly as sentitune does. The config's own
`model_type` makes loading without `trust_remote_code=True` fail instead of silently putting a random
pooler in front of the head. An input longer than the run's max_length (`sentitune_max_length`) is cut
as sentitune's tokenizer cuts it (its first max_length - 1 tokens and its closing one), so a long post
scores as in sentitune even when the caller does not ask the tokenizer to truncate.

Every run folder also names `SentituneTokenizerFast` in tokenizer_config.json's auto_map: loaded with
`trust_remote_code=True` (pipeline(), AutoTokenizer), the folder's tokenizer.json cuts posts at the run's
max_length unless the caller says otherwise, as sentitune does; without it transformers loads the same
tokenizer.json as a PreTrainedTokenizerFast, which cuts only when asked (`truncation=True`).
This file imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "sentitune-mean-pooled"
ENCODER_TYPE_KEY = "sentitune_encoder_type"
MAX_LENGTH_KEY = "sentitune_max_length"
_OWN_KEYS = {
    "model_type",
    "auto_map",
    "architectures",
    "transformers_version",
    ENCODER_TYPE_KEY,
    MAX_LENGTH_KEY,
}


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
        inputs = cut_to(getattr(self.config, MAX_LENGTH_KEY, None), inputs)
        hidden = self.base_model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def cut_to(max_length: int | None, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`inputs` with every row longer than `max_length` tokens cut to its first max_length - 1 tokens and its
    last one (the closing special token), as a tokenizer truncating at max_length would have written it;
    the rows come back padded on the right to the longest of them."""
    mask = inputs["attention_mask"]
    if not max_length or mask.shape[1] <= max_length:
        return inputs
    rank = mask.cumsum(dim=1)  # 1, 2, ... along each row's tokens
    keep = mask.bool() & ((rank < max_length) | (rank == mask.sum(dim=1, keepdim=True)))
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :max_length]
    cut = {name: tensor.gather(1, order) for name, tensor in inputs.items()}
    cut["attention_mask"] = keep.gather(1, order).to(mask.dtype)
    return cut


class SentituneTokenizerFast(PreTrainedTokenizerFast):
    """The run's tokenizer.json as it is (the run's normalisation in its normalizer), cutting posts at its
    model_max_length (the run's max_length) when the caller gives neither `truncation` nor `max_length`:
    transformers' own default is not to cut, which scores a longer post otherwise than the run does."""

    def __call__(self, *args, truncation=None, max_length=None, **kwargs):
        if truncation is None and max_length is None:
            truncation = True
        return super().__call__(*args, truncation=truncation, max_length=max_length, **kwargs)
