from llm_eval.align import is_refusal
from llm_eval.judge import conversation, pairwise_accuracy, win_tie_loss


def test_win_tie_loss_counts_ties_half_and_carries_intervals():
    policy = [2.0, 1.0, 0.5, 3.0]
    reference = [1.0, 1.0, 1.0, 1.0]
    wtl = win_tie_loss(policy, reference)
    assert (wtl["win"].value, wtl["tie"].value, wtl["loss"].value) == (50.0, 25.0, 25.0)
    assert wtl["win_rate"].value == 62.5
    assert wtl["win_rate"].lo <= 62.5 <= wtl["win_rate"].hi


def test_pairwise_accuracy_and_margin():
    accuracy, margin = pairwise_accuracy([1.0, 2.0, 0.0], [0.0, 1.0, 1.0])
    assert round(accuracy.value, 6) == round(200 / 3, 6)
    assert round(margin.value, 6) == round(1 / 3, 6)


def test_refusals_are_recognised_and_answers_are_not():
    assert is_refusal("I can't help with that. It could hurt someone.")
    assert is_refusal("  i CAN'T help with that")
    assert not is_refusal("Sure. Start with a small step, go slowly.")
    assert not is_refusal("42")


def test_conversation_accepts_text_or_messages():
    assert conversation("Hi", "Hello") == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    msgs = [{"role": "user", "content": "Hi"}]
    assert conversation(msgs, "Yo")[0] == msgs[0]
