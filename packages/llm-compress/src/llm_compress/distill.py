"""Knowledge distillation: a smaller student learns the SFT teacher's next-token distributions.

Logit knowledge distillation (Hinton et al. 2015, arXiv:1503.02531) trains a small student to match a
larger teacher's softened output distribution (softmax at temperature T, loss scaled by T^2) instead of
only the one-hot next token, so it also learns which wrong answers the teacher finds plausible; as in
that paper, `--hard_weight` mixes in the plain next-token loss on the reference replies. trl's
`GKDTrainer` (Generalized KD, Agarwal et al. 2024, arXiv:2306.13649) provides the divergence, a
generalised Jensen-Shannon divergence with weight beta: forward KL(teacher||student) (beta=0),
reverse KL(student||teacher) (beta=1) or JSD (beta=0.5); with probability lambda (`--on_policy`) a
batch's replies are sampled from the student itself, so it is also corrected on its own mistakes.
Only the assistant reply tokens carry the loss (the chat template's `{% generation %}` span, as in
`llm-train sft`). The student keeps the teacher's tokenizer and width with `--student_layers` evenly
spaced decoder layers copied from the teacher (the DistilBERT initialisation, Sanh et al. 2019,
arXiv:1910.01108), or is a random narrower `--student_size` model. `--method sft` is the control: the
same student, data, batches and schedule with plain next-token loss on the reference replies (trl's
`SFTTrainer`), so any gain of `kd` comes from the teacher.

    llm-compress distill --method kd --teacher models/sft-full --data data/synth/messages --student_layers 2 \\
        --epochs 6 --learning_rate 0.003 --out models/student-kd --metrics reports/metrics/train_student_kd.json
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import require_model_folder, write_metrics
from llm_train.distributed import relaunch
from llm_train.init import SIZES
from llm_train.loop import LoopConfig, load_splits, write_loss_curves

logger = logging.getLogger(__name__)
METHODS = ("kd", "sft")
# Our loss name -> GKD's beta, the weight of the generalised JSD (0 = forward KL, 1 = reverse KL).
LOSSES = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": 0.5}
_PRODUCER = "llm-train sft --method full --out {0}"


@dataclass
class DistillConfig(LoopConfig):
    method: str = field(
        default="kd",
        metadata={"help": f"{' | '.join(METHODS)}: distil from the teacher, or plain SFT of the same student "
                  "(the control; ignores loss, on_policy, temperature, hard_weight)."},
    )
    teacher: str = field(default="models/sft-full", metadata={"help": "Teacher model folder (a chat SFT model)."})
    data: str = field(
        default="data/synth/messages",
        metadata={"help": 'Dataset folder of chat rows {"messages": [...]} with train/validation splits.'},
    )
    out: str = field(default="models/student-kd", metadata={"help": "Output folder of the student model."})
    loss: str = field(
        default="forward_kl",
        metadata={"help": f"Divergence to the teacher: {' | '.join(LOSSES)} (GKD beta 0, 1, 0.5)."},
    )
    on_policy: float = field(
        default=0.0,
        metadata={"help": "Share of batches whose replies the student samples itself (GKD lambda); "
                  "0 = offline KD on the dataset's replies."},
    )
    temperature: float = field(
        default=4.0, metadata={"help": "Softmax temperature of both models in the KD loss (scaled by T^2)."}
    )
    hard_weight: float = field(
        default=0.5,
        metadata={"help": "kd: weight w of the plain next-token loss on the reference replies in "
                  "(1-w)*KD + w*NLL (Hinton et al.); 0 = pure distillation, which cannot beat its teacher."},
    )
    student_layers: int = field(
        default=2,
        metadata={"help": "Student = this many evenly spaced teacher layers, teacher-initialised, same width "
                  "(must be fewer than the teacher's)."},
    )
    student_size: str = field(
        default="",
        metadata={"help": f"'' = use student_layers; else a random student of llm-train size "
                  f"{' | '.join(SIZES)} (must be smaller than the teacher)."},
    )
    max_length: int = field(default=256, metadata={"help": "Truncate conversations to this many tokens."})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.student_size and self.student_size not in SIZES:
            raise ValueError(
                f"unknown student_size {self.student_size!r}; choose one of: {', '.join(SIZES)} (or '' for layers)"
            )
        if not 0.0 <= self.on_policy <= 1.0:
            raise ValueError(f"on_policy must be in [0, 1] (share of on-policy batches), got {self.on_policy}")
        if not 0.0 <= self.hard_weight < 1.0:
            raise ValueError(f"hard_weight must be in [0, 1) (1 would be --method sft), got {self.hard_weight}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("student_layers", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if Path(self.out).expanduser().resolve() == Path(self.teacher).expanduser().resolve():
            raise ValueError(f"out must differ from teacher ({self.teacher}): the output folder is replaced")


class ChatCollator:
    """Chat rows -> right-padded input_ids/attention_mask/labels with the loss on the assistant replies only.

    The mask is the chat template's `{% generation %}` span, as `llm-train sft` trains with
    `assistant_only_loss`. With `prompts=True` it also returns the left-padded prompt (everything before
    the last reply, ending with the assistant tag) that GKD's on-policy step generates from.
    """

    def __init__(self, tokenizer, max_length: int, prompts: bool):
        self.tokenizer, self.max_length, self.prompts = tokenizer, max_length, prompts

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        pad = self.tokenizer.pad_token_id
        ids, labels, prompts = [], [], []
        for row in rows:
            enc = self.tokenizer.apply_chat_template(
                row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            tokens, mask = enc["input_ids"][: self.max_length], enc["assistant_masks"][: self.max_length]
            if 1 not in mask:
                raise ValueError(f"a conversation has no assistant tokens within max_length={self.max_length} (does "
                                 "it end with an assistant turn, and does the chat template mark it with "
                                 "{% generation %}?)")
            start = len(mask) - mask[::-1].index(1)  # walk back from the end of the last reply to its start
            while start > 0 and mask[start - 1]:
                start -= 1
            ids.append(tokens)
            labels.append([t if m else -100 for t, m in zip(tokens, mask, strict=True)])
            prompts.append(tokens[:start])
        width = max(map(len, ids))
        batch = {
            "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            "labels": torch.tensor([x + [-100] * (width - len(x)) for x in labels]),
        }
        if self.prompts:
            # Left padding, so generated tokens follow every prompt directly.
            width = max(map(len, prompts))
            batch["prompts"] = torch.tensor([[pad] * (width - len(x)) + x for x in prompts])
            batch["prompt_attention_mask"] = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in prompts])
        return batch


def _require_teacher(name: str):
    """The teacher's tokenizer and frozen fp32 model; a missing folder names the command that makes it."""
    import torch
    from llm_data.tokenizer import load_tokenizer
    from transformers import AutoModelForCausalLM

    name = require_model_folder(name, _PRODUCER.format(name))
    try:
        tokenizer = load_tokenizer(name)
    except OSError as e:
        raise FileNotFoundError(f"{name}: no such teacher folder, and the hub did not provide it; "
                                f"create it with `{_PRODUCER.format(name)}`") from e
    if not tokenizer.chat_template:
        raise ValueError(f"{name}: the teacher's tokenizer has no chat template; distil from a chat SFT model")
    teacher = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    teacher.requires_grad_(False).eval()
    return tokenizer, teacher


def layer_map(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layer copied into each student layer: evenly spaced, first and last kept (12 -> 6 gives
    DistilBERT's 0, 2, 4, 7, 9, 11)."""
    if n_student == 1:
        return [0]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def build_student(teacher, cfg: DistillConfig):
    """A standalone student with the teacher's vocabulary, special tokens and context length."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(teacher.config)
    n_teacher = config.num_hidden_layers
    if cfg.student_size:
        hidden, layers, heads, kv_heads, inter = SIZES[cfg.student_size]
        config.update(dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=kv_heads, intermediate_size=inter, head_dim=hidden // heads))
        student = AutoModelForCausalLM.from_config(config)  # random init under the caller's seed
        if student.num_parameters() >= teacher.num_parameters():
            raise ValueError(f"student_size {cfg.student_size!r} ({student.num_parameters():,} parameters) is not "
                             f"smaller than the teacher ({teacher.num_parameters():,}); pick a smaller size")
        return student
    if not 1 <= cfg.student_layers < n_teacher:
        raise ValueError(f"student_layers must be in [1, {n_teacher}) for this {n_teacher}-layer teacher, "
                         f"got {cfg.student_layers}")
    keep = layer_map(n_teacher, cfg.student_layers)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(config)
    source = teacher.state_dict()
    layer_key = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")

    def teacher_key(key: str) -> str:
        m = layer_key.match(key)
        return f"{m[1]}{keep[int(m[2])]}{m[3]}" if m else key

    student.load_state_dict({k: source[teacher_key(k)].clone() for k in student.state_dict()}, strict=True)
    logger.info("student layers = teacher layers %s", keep)
    return student


def _kd_trainer_class():
    """trl's GKDTrainer with a temperature and an optional hard-label term in the loss, and the plain
    next-token loss when evaluating."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer
    from trl.experimental.gkd import GKDTrainer

    lm_keys = ("input_ids", "attention_mask", "labels")

    def nll(logits, labels):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)

    class KDTrainer(GKDTrainer):
        def __init__(self, *args, loss_temperature: float = 1.0, hard_weight: float = 0.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_temperature, self.hard_weight = loss_temperature, hard_weight

        def training_step(self, model, inputs, num_items_in_batch=None):
            # GKD swaps in student samples on on-policy steps; the hard-label term needs the reference replies.
            self._reference = {k: inputs[k] for k in lm_keys}
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = {k: inputs[k] for k in lm_keys}
            if not model.training:
                # eval_loss is the student's NLL on the reference replies, exactly what --method sft reports.
                return SFTTrainer.compute_loss(self, model, batch, return_outputs, num_items_in_batch)
            student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            self.teacher_model.eval()
            with torch.no_grad():
                teacher = self.teacher_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            t = self.loss_temperature
            # Mean over this batch's reply tokens (no gradient accumulation): on-policy steps replace the
            # labels after the Trainer counted num_items_in_batch, so that count would be stale.
            loss = self.generalized_jsd_loss(
                student.logits[:, :-1].float(), teacher.logits[:, :-1].float(), labels=batch["labels"][:, 1:],
                beta=self.beta, temperature=t,
            ) * t**2  # Hinton et al.: keeps gradient magnitudes comparable across temperatures
            if self.hard_weight:
                ref = {k: v.to(batch["input_ids"].device) for k, v in self._reference.items()}
                offline = ref["input_ids"].shape == batch["input_ids"].shape and torch.equal(
                    ref["input_ids"], batch["input_ids"])
                logits = student.logits if offline else model(
                    input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
                loss = (1 - self.hard_weight) * loss + self.hard_weight * nll(logits, ref["labels"])
            return (loss, student) if return_outputs else loss

    return KDTrainer


def _max_reply_tokens(tokenizer, rows) -> int:
    """Longest reference reply in tokens (+1 for the end token): the on-policy sampling budget."""
    replies = [row["messages"][-1]["content"] for row in rows]
    return max(len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"]) + 1


def _nll(model, dataset, collator, batch_size: int) -> float:
    """Token-weighted mean next-token NLL on the reply tokens."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in tqdm(range(0, len(dataset), batch_size), desc="eval nll", leave=False):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(model.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((labels != -100).sum())
    return total / max(count, 1)


def run_distill(cfg: DistillConfig) -> Path:
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer
    from trl.experimental.gkd import GKDConfig

    if relaunch(cfg, "llm_compress.cli", "distill"):
        return Path(cfg.out)
    tokenizer, teacher = _require_teacher(cfg.teacher)
    data = load_splits(cfg.data)
    if "messages" not in data["train"].column_names:
        raise ValueError(f"{cfg.data}: distillation needs chat rows with a 'messages' field, found "
                         f"{data['train'].column_names} (use the llm-data synth messages/ folder)")
    set_seed(cfg.seed)
    student = build_student(teacher, cfg)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    n_teacher, n_student = teacher.num_parameters(), student.num_parameters()
    eval_collator = ChatCollator(tokenizer, cfg.max_length, prompts=False)
    # Before training: the Trainer wraps the teacher's forward in its mixed-precision autocast.
    teacher_eval_loss = _nll(teacher, data["validation"], eval_collator, cfg.batch_size)
    logger.info("teacher %s parameters, student %s (%.2fx smaller)", f"{n_teacher:,}", f"{n_student:,}",
                n_teacher / n_student)

    # Both methods see identical batches (same collator, seed and schedule); only the loss differs.
    common = dict(
        **cfg.trainer_args(),
        **cfg.checkpoint_args(),
        max_length=cfg.max_length,
        remove_unused_columns=False,  # the collator reads the raw `messages`
        dataset_kwargs={"skip_prepare_dataset": True},
        loss_type="nll",
    )
    kd = cfg.method == "kd"
    collator = ChatCollator(tokenizer, cfg.max_length, prompts=kd)
    if kd:
        args = GKDConfig(
            **common, beta=LOSSES[cfg.loss], lmbda=cfg.on_policy,
            temperature=1.0,  # on-policy replies are sampled from the student's own distribution
            max_new_tokens=_max_reply_tokens(tokenizer, data["train"]),
        )
        trainer = _kd_trainer_class()(
            model=student, teacher_model=teacher, args=args, data_collator=collator,
            train_dataset=data["train"], eval_dataset=data["validation"], processing_class=tokenizer,
            loss_temperature=cfg.temperature, hard_weight=cfg.hard_weight,
        )
    else:
        trainer = SFTTrainer(
            model=student, args=SFTConfig(**common), data_collator=collator,
            train_dataset=data["train"], eval_dataset=data["validation"], processing_class=tokenizer,
        )
    run = cfg.train(trainer)

    # Drop the Trainer's autocast wrapper, so eval_loss is the fp32 NLL for both methods and the teacher.
    student = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    student.generation_config = copy.deepcopy(teacher.generation_config)  # eos/pad as the teacher generates
    eval_loss = _nll(student, data["validation"], eval_collator, cfg.batch_size)
    with cfg.saving() as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    if not cfg.main_process:
        return Path(cfg.out)
    cfg.done()
    metrics = {
        "teacher_parameters": n_teacher,
        "student_parameters": n_student,
        "parameter_ratio": n_teacher / n_student,
        **run,
        "eval_loss": eval_loss,
        "teacher_eval_loss": teacher_eval_loss,
        "steps": trainer.state.global_step,
    }
    logger.info("%s student: eval_loss %.4f (teacher %.4f) after %d steps in %.1fs", cfg.method, eval_loss,
                teacher_eval_loss, metrics["steps"], run["train_seconds"])
    write_metrics(cfg.metrics, metrics)
    write_loss_curves(cfg.plots, trainer.state.log_history)
    return Path(cfg.out)
