"""Corpus BLEU as an `evaluate` metric module that loads from this folder, with no network.

BLEU (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation") is the
geometric mean of the modified 1- to 4-gram precisions of the predictions against their references,
pooled over the whole corpus, times a brevity penalty for predictions shorter than the references.
The score is on a 0-100 scale. Scoring is done by `sacrebleu` (Post 2018), whose fixed tokenizer
(`13a`) and smoothing make scores comparable across papers; it is the implementation behind the
hub's `sacrebleu` metric.

    import evaluate
    bleu = evaluate.load("<path to this folder>")
    bleu.compute(predictions=["the cat sat"], references=["the cat sat"])["score"]  # 100.0
"""

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
}
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: one reference text per prediction, or a list of reference texts per prediction
        (every prediction must have the same number of references).
    tokenize: sacrebleu tokenizer (default '13a'); lowercase: compare lowercased text (default False).
Returns:
    score (corpus BLEU, 0-100), precisions (1- to 4-gram, 0-100), bp (brevity penalty),
    sys_len and ref_len (token counts).
"""


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"),
                     "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
            codebase_urls=["https://github.com/mjpost/sacreBLEU"],
            reference_urls=["https://aclanthology.org/P02-1040/", "https://aclanthology.org/W18-6319/"],
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False):
        # One reference per prediction arrives as a plain string; sacrebleu wants reference streams,
        # i.e. the transpose: refs[k][i] is the k-th reference of prediction i.
        per_prediction = [[r] if isinstance(r, str) else list(r) for r in references]
        n_refs = {len(r) for r in per_prediction}
        if len(n_refs) > 1:
            raise ValueError(f"every prediction needs the same number of references, got {sorted(n_refs)}")
        streams = [list(refs) for refs in zip(*per_prediction, strict=True)]
        result = sacrebleu.corpus_bleu(predictions, streams, tokenize=tokenize, lowercase=lowercase)
        return {
            "score": result.score, "precisions": list(result.precisions), "bp": result.bp,
            "sys_len": result.sys_len, "ref_len": result.ref_len,
        }
