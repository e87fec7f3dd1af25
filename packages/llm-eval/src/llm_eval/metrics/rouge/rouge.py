"""ROUGE as an `evaluate` metric module that loads from this folder, with no network.

ROUGE (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries") scores a generated text by
its overlap with a reference: ROUGE-1/2 count shared unigrams/bigrams, ROUGE-L finds the longest common
subsequence (LCS) of words, which rewards the same words in the same order without requiring them to
be adjacent. Each pair gets an F-measure from LCS precision (LCS / prediction length) and recall
(LCS / reference length); the corpus score is the mean F-measure over pairs, in 0-1. Scoring is done by
Google's `rouge_score` package, the implementation behind the hub's `rouge` metric.

    import evaluate
    rouge = evaluate.load("<path to this folder>")
    rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])["rougeL"]
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    pages = "74--81",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    rouge_types: which scores to return (default: rouge1, rouge2, rougeL).
    use_stemmer: Porter-stem words before matching (default False).
    use_aggregator: average over the pairs (default True); False returns each pair's F-measure, as the
        hub's `rouge` does, e.g. to bootstrap an interval over test items.
Returns:
    {rouge_type: mean F-measure over the pairs, 0-1}; 0.0 for every type when there are no pairs.
    With use_aggregator=False, {rouge_type: [F-measure of each pair]}.
"""

DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL")


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013/"],
        )

    def _compute(self, predictions, references, rouge_types=DEFAULT_TYPES, use_stemmer=False,
                 use_aggregator=True):
        scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
        per_pair = {rouge_type: [] for rouge_type in rouge_types}
        for prediction, reference in zip(predictions, references, strict=True):
            scores = scorer.score(reference, prediction)  # rouge_score takes (target, prediction)
            for rouge_type in rouge_types:
                per_pair[rouge_type].append(scores[rouge_type].fmeasure)
        if not use_aggregator:
            return per_pair
        n = max(len(predictions), 1)
        return {rouge_type: sum(values) / n for rouge_type, values in per_pair.items()}
