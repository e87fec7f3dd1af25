"""`llm-data <command>`: the package's one entry point; each command is one technique module.

`dispatch` is also the CLI convention of the other llm-lab packages (they depend on llm-data for it
and for dataset I/O): a registry of commands, each a config dataclass parsed from flags and an
optional YAML file, and one-line errors with exit code 2 for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

import yaml

# name -> (module, config class, run function). Modules import heavy libraries inside `run_*`,
# so `llm-data --help` stays instant.
COMMANDS = {
    "synth": ("llm_data.synth", "SynthConfig", "run_synth"),
    "hub": ("llm_data.hub", "HubConfig", "run_hub"),
    "real": ("llm_data.real", "RealConfig", "run_real"),
    "gold": ("llm_data.gold", "GoldConfig", "run_gold"),
    "tokenizer": ("llm_data.tokenizer", "TokenizerConfig", "run_tokenizer"),
}
Commands = dict[str, tuple[str, str, str]]


def _usage(prog: str, commands: Commands) -> str:
    lines = [f"usage: {prog} <command> [--config FILE.yaml] [--flag value ...]", "", "commands:"]
    for name, (module, _, _) in commands.items():
        doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<12} {doc}")
    lines.append(f"\n`{prog} <command> --help` lists that command's flags.")
    return "\n".join(lines)


def _parse(prog: str, commands: Commands, name: str, argv: list[str]):
    """Build the command's dataclass from an optional YAML file plus CLI flags (flags win), like TrlParser."""
    from transformers import HfArgumentParser

    module_name, cls_name, run_name = commands[name]
    module = importlib.import_module(module_name)
    cfg_cls = getattr(module, cls_name)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(
        cfg_cls, prog=f"{prog} {name}", description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with the same keys as the flags; flags override it")
    for action in parser._actions:
        # argparse %-formats help text: a literal "15%" in a field's help would crash --help.
        if action.help and "%" in action.help:
            action.help = re.sub(r"%(?!\()", "%%", action.help)
    if known.config:
        with open(known.config) as f:
            values = yaml.safe_load(f) or {}
        fields = set(cfg_cls.__dataclass_fields__)
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"{known.config}: unknown keys {unknown}; valid keys: {sorted(fields)}")
        parser.set_defaults(**values)
    # The extra --config flag comes back as a trailing namespace; the config is first.
    cfg = parser.parse_args_into_dataclasses(rest, look_for_args_file=False)[0]
    return cfg, getattr(module, run_name)


def dispatch(prog: str, commands: Commands, argv: list[str] | None = None) -> int:
    """Run `prog <command> [flags]`; returns the exit code (0 ok, 2 bad usage or bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(prog, commands))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"{prog}: error: unknown command {name!r}; choose one of: {', '.join(commands)}", file=sys.stderr)
        return 2
    try:
        cfg, run = _parse(prog, commands, name, rest)
        out = run(cfg)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"{prog} {name}: error: {e}", file=sys.stderr)
        return 2
    if out is not None:
        print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return dispatch("llm-data", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
