"""Assets for the dataset: loaded from .blend and interchange files (Blender's own importers) or built-in
primitives, each kept as a collection outside every scene, ready to be instanced into target scenes.

Each asset gets a description (its asset metadata, a `description` custom property, or its cleaned
name) and a real-world size: its own dimensions, or a size template (assets/size_templates.json) when
its name is a template's id or label or its `seethrough_template` property names one. The box the
dataset uses is the yaw-only box fitted to the asset's evaluated geometry (box_fitting.fit_box).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bmesh
import bpy
import numpy as np

from seethrough_core.box_fitting import clean_description, fit_box
from seethrough_core.dataset_scenes import ASSET_SUFFIXES, AssetSpec

from .. import compat
from ..object_points import GEOMETRY_TYPES, front_direction, world_points
from ..templates import SizeTemplate, TemplateError, get_template, load_templates

BLEND = ".blend"
IMPORTED = set(ASSET_SUFFIXES) - {BLEND}
DESCRIPTION_PROPERTIES = ("description", "seethrough_description")
TEMPLATE_PROPERTY = "seethrough_template"
PRIMITIVES_SOURCE = "<primitives>"


@dataclass
class LoadedAsset:
    spec: AssetSpec
    source: str  # the file it came from
    collection: bpy.types.Collection  # instanced into target scenes; linked to no scene
    scale: float  # uniform scale from the file's units to the real-world size
    fit_center: tuple[float, float, float]  # the fitted box in the file's own frame, before scaling
    fit_yaw_deg: float
    template: str | None

    def record(self) -> dict:
        return {
            "id": self.spec.id,
            "description": self.spec.description,
            "size": list(self.spec.size),
            "source": self.source,
            "scale": self.scale,
            "template": self.template,
        }


@dataclass
class AssetLibrary:
    assets: list[LoadedAsset] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)  # {"source", "reason"}

    def get(self, asset_id: str) -> LoadedAsset:
        for asset in self.assets:
            if asset.spec.id == asset_id:
                return asset
        raise KeyError(f"no asset {asset_id!r} in this library")

    def problem(self, source: str, reason: str) -> None:
        self.problems.append({"source": source, "reason": reason})


def load_library(paths: list[str], primitives: bool = False) -> AssetLibrary:
    """Every asset of the given files (and the primitives); broken files and empty assets are noted in
    ``problems`` and skipped."""
    library = AssetLibrary()
    if primitives:
        add_primitives(library)
    for path in paths:
        source = Path(path)
        if not source.is_file():
            library.problem(path, "file not found")
            continue
        suffix = source.suffix.lower()
        try:
            if suffix == BLEND:
                _load_blend(library, source)
            elif suffix in IMPORTED:
                _load_imported(library, source)
            else:
                library.problem(path, f"unsupported file type {suffix or '(none)'}")
        except (RuntimeError, OSError, ValueError) as exc:
            library.problem(path, f"cannot be read ({_first_line(exc)})")
    return library


# --- .blend files ------------------------------------------------------------------------------


def _load_blend(library: AssetLibrary, path: Path) -> None:
    """Collections or objects marked as assets; without any, every top-level object (with its children)."""
    with bpy.data.libraries.load(str(path), link=False) as (source, loaded):
        loaded.objects = list(source.objects)
        loaded.collections = list(source.collections)
    objects = [obj for obj in loaded.objects if obj is not None]
    collections = [coll for coll in loaded.collections if coll is not None]
    marked_collections = [coll for coll in collections if coll.asset_data is not None]
    marked_objects = [obj for obj in objects if obj.asset_data is not None]
    if marked_collections or marked_objects:
        for coll in marked_collections:
            _add_asset(library, str(path), coll.name, coll, coll.asset_data.description)
        for obj in marked_objects:
            _add_object_asset(library, path, obj, obj.asset_data.description)
        return
    top_level = [obj for obj in objects if obj.parent is None]
    for obj in top_level:
        if obj.type in GEOMETRY_TYPES or obj.type == "EMPTY":
            _add_object_asset(library, path, obj, "")
    if not top_level:
        library.problem(str(path), "the file has no objects")


def _add_object_asset(library: AssetLibrary, path: Path, obj: bpy.types.Object, description: str) -> None:
    coll = bpy.data.collections.new(f"asset {path.name} {obj.name}")
    for member in (obj, *obj.children_recursive):
        coll.objects.link(member)
    _add_asset(library, str(path), obj.name, coll, description, front=front_direction(obj))


# --- interchange files: one asset per file -----------------------------------------------------


def _load_imported(library: AssetLibrary, path: Path) -> None:
    before = set(bpy.data.objects)
    try:
        result = _import(path)
    finally:
        new = [obj for obj in bpy.data.objects if obj not in before]
        for obj in new:
            for owner in list(obj.users_collection):
                owner.objects.unlink(obj)
    if "FINISHED" not in result:
        _remove(new)
        raise RuntimeError("the importer gave up")
    # Cameras and lights of the file are no part of the asset.
    extras = [obj for obj in new if obj.type not in GEOMETRY_TYPES and obj.type != "EMPTY"]
    _remove(extras)
    members = [obj for obj in new if obj not in extras]
    if not members:
        library.problem(str(path), "the file has no objects with geometry")
        return
    coll = bpy.data.collections.new(f"asset {path.name}")
    for obj in members:
        coll.objects.link(obj)
    roots = [obj for obj in members if obj.parent is None or obj.parent not in members]
    name = roots[0].name if len(roots) == 1 and not _is_generated_name(roots[0].name) else path.stem
    description = next((_custom_description(obj) for obj in roots if _custom_description(obj)), "")
    front = front_direction(roots[0]) if len(roots) == 1 else None
    _add_asset(library, str(path), name, coll, description, front=front, asset_id=f"{path.name}")


def _import(path: Path) -> set[str]:
    suffix = path.suffix.lower()
    filepath = str(path)
    if suffix in (".glb", ".gltf"):
        return bpy.ops.import_scene.gltf(filepath=filepath)
    if suffix == ".obj":
        return bpy.ops.wm.obj_import(filepath=filepath)
    if suffix == ".fbx":
        return bpy.ops.import_scene.fbx(filepath=filepath)
    return bpy.ops.wm.usd_import(filepath=filepath)


def _is_generated_name(name: str) -> bool:
    return name.split(".")[0].lower() in {"scene", "root", "rootnode", "sketchfab_model", "world"}


def _remove(objects: list[bpy.types.Object]) -> None:
    for obj in objects:
        bpy.data.objects.remove(obj, do_unlink=True)


# --- primitives ---------------------------------------------------------------------------------

# (name, description, linear RGB colour); shapes and sizes in _primitive_mesh.
PRIMITIVES = (
    ("cube", "a red cube", (0.6, 0.03, 0.02)),
    ("cylinder", "a blue cylinder", (0.02, 0.1, 0.6)),
    ("cone", "a yellow cone", (0.7, 0.5, 0.02)),
    ("ball", "a green ball", (0.05, 0.5, 0.05)),
    ("monkey", "a grey monkey head", (0.3, 0.3, 0.3)),
)


def add_primitives(library: AssetLibrary) -> None:
    """Simple coloured shapes about a metre large, for tests and demos."""
    for name, description, color in PRIMITIVES:
        mesh = bpy.data.meshes.new(f"primitive {name}")
        bm = bmesh.new()
        try:
            _primitive_mesh(bm, name)
            bm.to_mesh(mesh)
        finally:
            bm.free()
        for polygon in mesh.polygons:
            polygon.use_smooth = name in ("cylinder", "cone", "ball", "monkey")
        material, tree = compat.new_node_material(f"primitive {name}")
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        bsdf.inputs["Base Color"].default_value = (*color, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.5
        output = tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
        mesh.materials.append(material)
        obj = bpy.data.objects.new(f"primitive {name}", mesh)
        coll = bpy.data.collections.new(f"asset primitive {name}")
        coll.objects.link(obj)
        _add_asset(library, PRIMITIVES_SOURCE, name, coll, description, asset_id=f"primitive:{name}")


def _primitive_mesh(bm: bmesh.types.BMesh, name: str) -> None:
    ops = bmesh.ops
    if name == "cube":
        ops.create_cube(bm, size=1.0)
    elif name == "cylinder":
        ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.4, radius2=0.4, depth=1.4)
    elif name == "cone":
        ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.0, depth=1.2)
    elif name == "ball":
        ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=0.5)
    else:
        ops.create_monkey(bm)
        # Suzanne faces -Y (Blender's front) lying along +-1 m: stand her 1 m tall
        bmesh.ops.scale(bm, vec=(0.5, 0.5, 0.5), verts=bm.verts)


# --- shared -------------------------------------------------------------------------------------


def _add_asset(
    library: AssetLibrary,
    source: str,
    name: str,
    coll: bpy.types.Collection,
    description: str,
    *,
    front: np.ndarray | None = None,
    asset_id: str | None = None,
) -> None:
    asset_id = asset_id or f"{Path(source).name}:{name}"
    points = _collection_points(coll)
    if not len(points):
        library.problem(source, f"asset {name!r} has no geometry")
        bpy.data.collections.remove(coll)
        return
    roots = [obj for obj in coll.all_objects if obj.parent is None or obj.parent.name not in coll.all_objects]
    description = description.strip() or next(
        (_custom_description(obj) for obj in roots if _custom_description(obj)), ""
    )
    description = description or clean_description(name) or "an object"
    try:
        template = _size_template(name, description, roots)
    except TemplateError as exc:
        library.problem(source, f"asset {name!r}: {exc}")
        bpy.data.collections.remove(coll)
        return
    fitted = fit_box(points, front)
    scale = 1.0
    if template is not None:
        scale = max(template.size) / max(fitted.size)
    coll.instance_offset = fitted.center
    size = tuple(round(side * scale, 6) for side in fitted.size)
    spec = AssetSpec(id=asset_id, description=description, size=size)  # type: ignore[arg-type]
    library.assets.append(
        LoadedAsset(
            spec=spec,
            source=source,
            collection=coll,
            scale=scale,
            fit_center=fitted.center,
            fit_yaw_deg=fitted.rotation_euler_deg[2],
            template=template.id if template else None,
        )
    )


def _collection_points(coll: bpy.types.Collection) -> np.ndarray:
    """World-space vertices of the collection's objects as evaluated (linked to the scene meanwhile)."""
    scene = bpy.context.scene
    scene.collection.children.link(coll)
    try:
        bpy.context.view_layer.update()
        depsgraph = bpy.context.evaluated_depsgraph_get()
        names = set(coll.all_objects.keys())
        roots = [obj for obj in coll.all_objects if obj.parent is None or obj.parent.name not in names]
        chunks = [world_points(obj, depsgraph) for obj in roots]
    finally:
        scene.collection.children.unlink(coll)
    chunks = [chunk for chunk in chunks if len(chunk)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def _custom_description(obj: bpy.types.Object) -> str:
    for key in DESCRIPTION_PROPERTIES:
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _size_template(name: str, description: str, roots: list[bpy.types.Object]) -> SizeTemplate | None:
    """The template a property names, or the one whose id or label is the asset's name (articles aside)."""
    for obj in roots:
        value = obj.get(TEMPLATE_PROPERTY)
        if isinstance(value, str) and value.strip():
            return get_template(value.strip())
    wanted = {_bare(clean_description(name)), _bare(description)}
    for template in load_templates():
        if _bare(template.id) in wanted or _bare(template.label) in wanted:
            return template
    return None


def _bare(text: str) -> str:
    words = text.lower().replace("_", " ").split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__
