"""The README's Python examples run as written and print what the text says they print (keeps the
docs true as the code moves)."""
import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _run_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    outputs = []
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {})
        outputs.append(out.getvalue())
    return outputs


def test_readme_python_blocks_run_and_show_the_method_working():
    first, second = _run_blocks()[:2]
    accuracy = {int(w): float(a) for w, a in re.findall(r"generated width (\d+): accuracy ([\d.]+)%", first)}
    assert set(accuracy) == {16, 12, 10, 8}, first
    assert all(a > 70 for a in accuracy.values()), first  # chance is 25%
    assert "{'0.weight': (16, 3, 3, 3), '0.bias': (16,), '1.weight': (16,), '1.bias': (16,)}" in second
    gap = float(re.search(r"generate_into wrote the same weights as generate, to (\S+)\n", second).group(1))
    assert gap < 1e-5
