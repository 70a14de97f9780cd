"""Every output path lies inside -o: odd track names, hostile --filename templates and stem names are refused."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import soundfile as sf
from runtime_bundle import STEMS, tiny_bundle
from runtime_inputs import write
from typer.testing import CliRunner

from unmix.runtime import OutputError, Separator
from unmix.runtime.cli import app
from unmix.runtime.files import check_template, output_paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def separator(bundle):
    return Separator.from_bundle(bundle, chunk=2048)


def separate(bundle, *args):
    return CliRunner().invoke(
        app, ["separate", "--bundle", str(bundle), "--chunk", "2048", "--quiet", *[str(a) for a in args]]
    )


def everything(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize("name", ["...wav", "..wav", ". .wav"])
def test_a_track_name_of_dots_is_refused_and_writes_nothing(separator, bundle, tmp_path, name):
    source = write(tmp_path / "in" / name, format="WAV")
    before = everything(tmp_path)
    with pytest.raises(OutputError, match="track name") as error:
        separator.separate_file(source, tmp_path / "out" / "sub")
    assert "\n" not in str(error.value) and everything(tmp_path) == before
    result = separate(bundle, source, "-o", tmp_path / "out" / "sub")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "track name" in line and name in line
    assert everything(tmp_path) - before <= {"out", "out/sub"}  # at most the empty output folder itself


def test_an_input_without_extension_gets_the_format_s_extension(separator, bundle, tmp_path):
    source = write(tmp_path / "song", format="WAV")
    result = separator.separate_file(source, tmp_path / "api")
    assert sorted(p.name for p in result.outputs.values()) == sorted(f"{stem}.wav" for stem in STEMS)
    assert all(sf.info(str(path)).format == "WAV" for path in result.outputs.values())
    cli = separate(bundle, source, "-o", tmp_path / "cli")
    assert cli.exit_code == 0, cli.output
    assert everything(tmp_path / "cli") == {"song"} | {f"song/{stem}.wav" for stem in STEMS}


BAD_TEMPLATES = {
    "{stem:d}": r"\{stem:d\} is not allowed",
    "{stem!x}": r"\{stem!x\} is not allowed",
    "{stem!r}.{ext}": r"\{stem!r\} is not allowed",
    "{stem:{foo}}": r"is not allowed",
    "{stem:>999999999}": r"\{stem:>999999999\} is not allowed",
    "{track}{stem:.0}.{ext}": r"\{stem:.0\} is not allowed",
    "{stem[0]}.{ext}": r"unknown field \{stem\[0\]\}",
    "{stem.upper}.{ext}": r"unknown field",
    "{}.{ext}": r"unknown field \{\}",
    "{0}/{stem}": r"unknown field \{0\}",
    "{stem": r"bad --filename template",
    "{stem}}": r"bad --filename template",
    "{track}.{ext}": r"must contain \{stem\}",
    "": r"must contain \{stem\}",
    "../{stem}.{ext}": r"relative path under -o",
    "{track}/../../{stem}.{ext}": r"relative path under -o",
    "/tmp/unmix-escape/{stem}.{ext}": r"relative path under -o",
    "{track}/{stem}\0.{ext}": r"NUL character",
}


@pytest.mark.parametrize("template", sorted(BAD_TEMPLATES))
def test_bad_templates_are_refused_quickly_with_one_line(bundle, separator, tmp_path, template):
    words = BAD_TEMPLATES[template]
    with pytest.raises(OutputError, match=words) as error:
        check_template(template)
    assert "\n" not in str(error.value)
    source = write(tmp_path / "a.wav")
    with pytest.raises(OutputError, match=words):
        separator.separate_file(source, tmp_path / "out", filename=template)
    start = time.perf_counter()
    result = separate(bundle, source, "-o", tmp_path / "out", "--filename", template)
    assert time.perf_counter() - start < 30  # {stem:>999999999} used to pad for minutes
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert re.search(words, line), line
    assert everything(tmp_path) == {"a.wav"}
    assert not Path("/tmp/unmix-escape").exists()


@pytest.mark.parametrize(
    "template",
    [
        "{track}/{stem}.{ext}",
        "{track}-{stem}.{ext}",
        "x/{trackext}/{track}/{stem}",
        "{stem}/{track}.{ext}",
        "a..b/{stem}.{ext}",
    ],
)
def test_plain_templates_still_work(template):
    check_template(template)
    paths = output_paths(Path("song.flac"), Path("out"), template, STEMS, "flac")
    assert len(set(paths.values())) == len(STEMS)


@pytest.mark.parametrize("stem", ["../../x", "/abs", "..", "", "a/b"])
def test_a_stem_name_that_is_a_path_is_refused(tmp_path, stem):
    with pytest.raises(OutputError, match="stem name"):
        output_paths(Path("song.wav"), tmp_path / "out", "{track}/{stem}.{ext}", ["bass", stem], "wav")


def test_a_symlink_under_the_output_folder_that_leads_outside_is_refused(separator, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "a").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="inside the output folder"):
        separator.separate_file(write(tmp_path / "a.wav"), tmp_path / "out")
    assert not any((tmp_path / "elsewhere").iterdir())


def test_two_stems_on_one_path_are_refused(tmp_path):
    # A case-only difference cannot happen with the known stems; a template without {stem} is the way in,
    # and check_template refuses it; output_paths checks again for direct callers.
    with pytest.raises(OutputError, match="must contain"):
        output_paths(Path("song.wav"), tmp_path, "{track}.{ext}", STEMS, "wav")
