"""The family registry: every part it names resolves and sits in the component the dependency rule puts it in, and
folders and graphs are told apart by it alone."""

from pathlib import Path

import pytest

from gptrl.errors import BundleError
from gptrl.families import FAMILIES, PART_COMPONENTS, family_of_folder, family_of_graph

ROOT = Path(__file__).parents[1] / "bundles"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_part_resolves_in_its_component(family):
    for part, component in PART_COMPONENTS.items():
        module = getattr(family, part).partition(":")[0]
        assert module == component or module.startswith(component + "."), (family.name, part, module)
        assert family.part(part) is not None


def test_folders_and_graphs_map_to_their_family(tmp_path):
    import onnx

    assert family_of_folder(ROOT / "hopper-v5").name == "causal"
    assert family_of_folder(ROOT / "dt-hopper-v5").name == "dt"
    for folder, name in (("hopper-v5", "causal"), ("dt-hopper-v5", "dt")):
        model = onnx.load(str(ROOT / folder / "policy.onnx"), load_external_data=False)
        assert family_of_graph({p.key: p.value for p in model.metadata_props}, "x").name == name
    with pytest.raises(BundleError, match="config.json: missing"):
        family_of_folder(tmp_path)
    with pytest.raises(BundleError, match=r"plain.onnx: not a gptrl policy graph \(metadata 'gptrl.format' is None"):
        family_of_graph({}, "plain.onnx")
