"""The packaging files: version, license, citation and type marker, against pyproject.toml."""

import importlib.metadata
from pathlib import Path

import tomllib
import yaml

import dcsd

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_the_distributions():
    assert dcsd.__version__ == importlib.metadata.version("dcsd")
    assert dcsd.__version__ == PYPROJECT["project"]["version"]


def test_license_file_is_the_apache_2_text_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert (
        text.split()[:3] == ["Apache", "License", "Version"] and "Version 2.0, January 2004" in text
    )
    assert "END OF TERMS AND CONDITIONS" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_citation_names_the_library_and_the_paper():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["version"] == PYPROJECT["project"]["version"]
    assert citation["license"] == PYPROJECT["project"]["license"]
    paper = citation["preferred-citation"]
    assert paper["title"] == "Multi-Domain Joint Training for Person Re-Identification"
    assert [a["family-names"] for a in paper["authors"]] == ["Yang", "Liu", "Wang", "Wang", "Zhang"]


def test_type_marker_is_package_data():
    assert (ROOT / "dcsd" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["dcsd"]
    assert "Typing :: Typed" in PYPROJECT["project"]["classifiers"]
    assert set(PYPROJECT["project"]["urls"]) >= {"Homepage", "Documentation", "Source", "Issues"}
