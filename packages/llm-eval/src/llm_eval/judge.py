"""Reward-model judging: score (prompt, reply) conversations, pairwise accuracy, win / tie / loss rates.

A reward model (a sequence classifier with one output, trained on preference pairs by `llm-align
reward`) reads a whole conversation and returns a scalar. Pairwise accuracy on held-out pairs says how
often it ranks the chosen reply above the rejected one. Win rate compares two policies the way
AlpacaEval and the RLHF papers do (Stiennon et al. 2020): on each prompt the judge scores both replies;
a win is a higher score, a tie is a difference within `tie_margin`, and ties count half.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_eval.stats import Estimate, mean_ci


def load_reward_model(folder: str, device: str = "cpu"):
    """(model, tokenizer) of a `save_pretrained` sequence-classification folder, in eval mode."""
    import torch
    from llm_data.io import require_model_folder
    from transformers import AutoModelForSequenceClassification

    from llm_eval.run import load_tokenizer

    require_model_folder(folder, "llm-align reward")
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).to(device)
    if model.config.num_labels != 1:
        raise ValueError(
            f"{folder}: a reward model has one output (num_labels=1), this one has {model.config.num_labels}"
        )
    tokenizer = load_tokenizer(folder, padding_side="right")
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    model.eval()
    return model, tokenizer


def conversation(prompt, reply) -> list[dict]:
    """A (prompt, reply) pair as messages; either side may already be a message list.

    A decoded reply is stripped: generation continues after the template's "<|assistant|> ", so the
    decoded text starts with that space, and the template would add a second one the reward model
    never saw in training.
    """
    user = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    assistant = [{"role": "assistant", "content": reply.strip()}] if isinstance(reply, str) else list(reply)
    return user + assistant


def conversation_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation as a reward model reads it: the chat template up to and including the
    reply's end-of-turn token, without the whitespace the template puts after it.

    The reward is read at the last token. A sampled reply ends at the end-of-turn token (where PPO reads
    its reward, and what the policy learned to emit), not at the template's newline after it, so
    training, judging and RL all score that same position.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False).rstrip()
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reward_scores(
    model, tokenizer, conversations: Sequence[list[dict]], batch_size: int = 32, max_length: int = 256
) -> list[float]:
    """One scalar per conversation, tokenized by `conversation_ids` as the reward model trained."""
    import torch

    ids = [conversation_ids(tokenizer, c)[:max_length] for c in conversations]
    scores: list[float] = []
    for start in range(0, len(ids), batch_size):
        batch = tokenizer.pad({"input_ids": ids[start : start + batch_size]}, return_tensors="pt").to(model.device)
        with torch.no_grad():
            scores += model(**batch).logits[:, 0].float().tolist()
    return scores


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float], seed: int = 0) -> tuple[Estimate, Estimate]:
    """(accuracy in percent, mean margin chosen - rejected), each with its bootstrap interval over pairs."""
    correct = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return mean_ci(correct, scale=100.0, seed=seed), mean_ci(margins, seed=seed)


def win_tie_loss(
    policy: Sequence[float], reference: Sequence[float], tie_margin: float = 0.0, seed: int = 0,
    groups: Sequence[str] | None = None,
) -> dict[str, Estimate]:
    """Win, tie and loss rates (percent) of `policy` over `reference` on the same prompts, and the win
    rate with ties counted half (`win_rate`), each with its bootstrap interval over prompts (over
    `groups` of them where given: phrasings of one request, see stats.mean_ci)."""
    diffs = [p - r for p, r in zip(policy, reference, strict=True)]
    win = [float(d > tie_margin) for d in diffs]
    tie = [float(abs(d) <= tie_margin) for d in diffs]
    loss = [float(d < -tie_margin) for d in diffs]
    half = [w + 0.5 * t for w, t in zip(win, tie, strict=True)]
    return {
        "win": mean_ci(win, 100.0, seed, groups),
        "tie": mean_ci(tie, 100.0, seed, groups),
        "loss": mean_ci(loss, 100.0, seed, groups),
        "win_rate": mean_ci(half, 100.0, seed, groups),
    }
