"""Hidden-state capture: first-token states of every layer, hooks removed, mode restored."""

import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from instability.capture import capture_outputs


def test_capture_equals_hidden_states_of_the_model():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    model = AutoModelForSequenceClassification.from_config(config)
    batches = [{"input_ids": torch.randint(1, 50, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.long)} for _ in range(2)]
    model.train()
    logits, hidden = capture_outputs(model, batches, prepare=lambda b: b)
    assert model.training, "capture restores the mode it found"
    model.eval()
    with torch.no_grad():
        reference = [model(**b, output_hidden_states=True) for b in batches]
    expected = torch.stack([torch.cat([r.hidden_states[layer][:, 0] for r in reference]) for layer in range(1, 4)])
    assert hidden.shape == (3, 8, 16)
    torch.testing.assert_close(hidden, expected)
    torch.testing.assert_close(logits, torch.cat([r.logits for r in reference]))
    left = [h for layer in model.bert.encoder.layer for h in layer._forward_hooks.values() if h.__name__ == "keep_first_token"]
    assert not left, "capture removes its hooks"
