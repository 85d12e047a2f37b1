"""The Colab quickstart is stored without outputs and runs end to end on a shrunken config."""

import pathlib

import nbformat

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "colab" / "quickstart.ipynb"


def _read() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_notebook_stored_without_outputs():
    notebook = _read()
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code_cells) >= 6
    for index, cell in enumerate(code_cells):
        assert cell.outputs == [], f"code cell {index} has stored outputs"
        assert cell.execution_count is None, f"code cell {index} has an execution count"


def test_notebook_code_compiles():
    for index, cell in enumerate(_read().cells):
        if cell.cell_type == "code":
            compile(cell.source, f"{NOTEBOOK}:cell{index}", "exec")


def test_notebook_has_parameter_cell():
    tagged = [cell for cell in _read().cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "TRAIT_RL_NOTEBOOK_TINY" in tagged[0].source


def test_notebook_executes(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # The kernel inherits this environment: one CPU device keeps the tiny run fast.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TRAIT_RL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("TRAIT_RL_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    notebook = _read()
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(REPO / "colab")}},
    )
    client.execute()

    assert (tmp_path / "run" / "report.md").is_file()
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 3
    markdown = [output["data"]["text/markdown"] for output in outputs
                if "text/markdown" in output.get("data", {})]  # fmt: skip
    assert any("trait_rl" in text for text in markdown)
    streams = "".join(output.get("text", "") for output in outputs)
    assert "clone and install skipped" in streams
    assert "trait_rl {" in streams
