"""The Slicer module without Slicer: it compiles, its code and .ui agree, CMake installs what exists."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "EDIQA" / "EDIQA.py"
UI = ROOT / "EDIQA" / "Resources" / "UI" / "EDIQA.ui"


def test_module_compiles_and_follows_the_template():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"), filename=str(MODULE))
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"EDIQA", "EDIQAWidget", "EDIQALogic", "EDIQATest", "EDIQAParameterNode"} <= classes


def test_every_widget_the_code_uses_exists_in_the_ui():
    names = {w.get("name") for w in ET.parse(UI).iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    assert used, "the module uses no widgets?"
    assert used <= names, f"missing in the .ui: {sorted(used - names)}"


def test_the_volume_selectors_hide_the_volumes_that_hold_no_image():
    """They offered colour, tensor and diffusion volumes, which the bridge then refused."""
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    [kinds] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", "") == "NOT_IMAGES"]
    selectors = {w.get("name"): w for w in ET.parse(UI).iter("widget")
                 if w.get("name") in ("inputVolumeSelector", "compareSelector")}
    assert len(selectors) == 2
    for name, widget in selectors.items():
        hidden = [p for p in widget.findall("property") if p.get("name") == "hideChildNodeTypes"]
        assert hidden and {e.text for e in hidden[0].iter("string")} == set(kinds), name
    assert {"vtkMRMLLabelMapVolumeNode", "vtkMRMLTensorVolumeNode"} <= set(kinds)  # colour volumes are tensor ones


def test_parameter_names_in_the_ui_exist_in_the_parameter_node():
    tree = ET.parse(UI)
    bound = {p.findtext("string") for p in tree.iter("property") if p.get("name") == "SlicerParameterName"}
    source = MODULE.read_text(encoding="utf-8")
    block = source[source.index("class EDIQAParameterNode"):source.index("class EDIQAWidget")]
    declared = set(re.findall(r"^    (\w+):", block, re.M))
    assert bound and bound <= declared


def _cmake_listed(cmake: Path) -> list[Path]:
    text = cmake.read_text(encoding="utf-8")
    module = re.search(r"set\(MODULE_NAME (\w+)\)", text)
    entries = re.findall(r"^\s+([\w${}./-]+\.(?:py|ui|png|json|safetensors|nrrd|md))\s*$", text, re.M)
    name = module.group(1) if module else ""
    return [cmake.parent / e.replace("${MODULE_NAME}", name) for e in entries]


def test_cmake_files_list_every_installed_file_that_exists():
    top = _cmake_listed(ROOT / "CMakeLists.txt")
    module = _cmake_listed(ROOT / "EDIQA" / "CMakeLists.txt")
    for path in top + module:
        assert path.exists(), f"CMake installs a missing file: {path.relative_to(ROOT)}"
    engine = {p.relative_to(ROOT) for p in top if p.suffix == ".py"}
    assert engine == {p.relative_to(ROOT) for p in (ROOT / "EDIQALib").rglob("*.py")}, "EDIQALib files not all installed"
    assert MODULE in module and UI in module
    models = {p.relative_to(ROOT) for p in top if "Models" in p.parts}
    assert models == {p.relative_to(ROOT) for p in (ROOT / "Resources" / "Models").iterdir()}


def test_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({key} "[^"]+"\)', text), key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "Apache License, Version 2.0" in (ROOT / "LICENSE").read_text(encoding="utf-8")  # the index requires one


def _reached_at_open(tree: ast.Module) -> list[ast.AST]:
    """Module-level code and every method that opening the panel runs: the widget's ``__init__``, ``setup``
    and ``enter`` and the logic's ``__init__``, then whatever they call as ``self.X(...)``,
    ``self.logic.X(...)`` or ``X(...)`` (a function of the module), transitively (handlers connected to
    buttons run later, on a click)."""
    methods = {(cls.name, fn.name): fn for cls in tree.body if isinstance(cls, ast.ClassDef)
               for fn in cls.body if isinstance(fn, ast.FunctionDef)}
    methods |= {("", fn.name): fn for fn in tree.body if isinstance(fn, ast.FunctionDef)}  # module functions
    top_level = [node for node in tree.body if not isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    todo = [m for m in (("EDIQAWidget", "__init__"), ("EDIQAWidget", "setup"), ("EDIQAWidget", "enter"),
                        ("EDIQALogic", "__init__")) if m in methods]
    todo += [("", n.func.id) for part in top_level for n in ast.walk(part)  # what the module runs at load
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and ("", n.func.id) in methods]
    reached = set()
    while todo:
        key = todo.pop()
        if key in reached:
            continue
        reached.add(key)
        for call in (n for n in ast.walk(methods[key]) if isinstance(n, ast.Call)):
            if isinstance(call.func, ast.Name):
                if ("", call.func.id) in methods:
                    todo.append(("", call.func.id))
                continue
            if not isinstance(call.func, ast.Attribute):
                continue
            owner = call.func.value
            if isinstance(owner, ast.Name) and owner.id == "self":
                target = (key[0], call.func.attr)
            elif isinstance(owner, ast.Attribute) and owner.attr == "logic" and getattr(owner.value, "id", "") == "self":
                target = ("EDIQALogic", call.func.attr)
            else:
                continue
            if target in methods:
                todo.append(target)
    assert {("EDIQAWidget", "setParameterNode"), ("EDIQALogic", "available_students")} <= reached
    return [*top_level, *(methods[k] for k in sorted(reached))]


# the engine's modules that the panel may import as it opens (a saved result's score, restored): they import
# neither PyTorch nor a package that the panel installs on first use where Slicer lacks it (checked below)
LIGHT_MODULES = ("EDIQALib.scene", "EDIQALib.scoring")


def test_the_engine_s_light_modules_import_no_package_that_slicer_lacks():
    import subprocess
    import sys

    pytest.importorskip("slicer")  # EDIQALib.scene is Slicer's: without slicer-core (the test extra) it cannot load
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    [packages] = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "PACKAGES"]
    heavy = sorted({"torch", "torchvision", *packages.values()} - {"SimpleITK"})  # Slicer ships SimpleITK
    code = (f"import sys, {', '.join(LIGHT_MODULES)}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_opening_the_panel_imports_nothing_of_the_engine():
    """The panel opens before PyTorch may be installed (its actions then offer to install it): nothing
    the module runs at load or while the panel opens imports EDIQALib (whose modules import torch), but
    its light modules."""
    at_open = _reached_at_open(ast.parse(MODULE.read_text(encoding="utf-8")))
    imported = {alias.name for part in at_open for node in ast.walk(part) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for part in at_open for node in ast.walk(part)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("EDIQALib", "torch")} - set(LIGHT_MODULES), imported


def test_each_bound_spin_box_and_slider_offers_its_parameter_s_range():
    """The parameter node's range replaces the .ui's when they are connected: a learning rate up to 1.0
    was offered where the .ui said 0.1."""
    source = MODULE.read_text(encoding="utf-8")
    block = source[source.index("class EDIQAParameterNode"):source.index("class EDIQAWidget")]
    ranges = {name: (float(lo.replace("_", "")), float(hi.replace("_", ""))) for name, lo, hi in
              re.findall(r"^    (\w+): Annotated\[\w+, WithinRange\(([-\d._e]+), ([-\d._e]+)\)\]", block, re.M)}
    checked = set()
    for widget in ET.parse(UI).iter("widget"):
        props = {p.get("name"): p for p in widget.findall("property")}
        if "SlicerParameterName" not in props or "maximum" not in props:
            continue
        name = props["SlicerParameterName"].findtext("string")
        bounds = tuple(float(next(iter(props[k])).text) for k in ("minimum", "maximum"))
        assert bounds == ranges[name], f"{name}: the .ui offers {bounds}, the parameter node {ranges[name]}"
        checked.add(name)
    assert checked == set(ranges), f"ranges without a widget: {sorted(set(ranges) - checked)}"


def test_the_labels_that_show_messages_wrap():
    """A label without word wrap is as wide as its text: a long warning or error widened the whole panel."""
    labels = {w.get("name"): w for w in ET.parse(UI).iter("widget") if w.get("class") == "QLabel"}
    for name in set(re.findall(r"self\.ui\.(\w+Label)\.text =", MODULE.read_text(encoding="utf-8"))):
        wrap = [p for p in labels[name].findall("property") if p.get("name") == "wordWrap"]
        assert wrap and wrap[0].findtext("bool") == "true", name
