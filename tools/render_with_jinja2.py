#!/usr/bin/env python3
"""Renders Jinja templates the way Hugging Face transformers' apply_chat_template does (the reference for
dsv2's chat-template goldens): jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and
the loopcontrols extension, transformers' {% generation %} tag, json.dumps as `tojson`, and the globals
raise_exception and strftime_now (from transformers/utils/chat_template_utils.py).

stdin: a JSON list of {"template": str, "context": object}; stdout: a JSON list of {"output": str} or
{"error": "ExceptionType: message"}, one per case. Used by tools/make_chat_template_goldens.mjs.
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker, without the tracking: {% generation %}...{% endgeneration %}."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    env = make_environment()
    results = []
    for case in json.load(sys.stdin):
        try:
            results.append({"output": env.from_string(case["template"]).render(**case["context"])})
        except Exception as e:  # every failure is a result: the goldens record which cases must fail
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump({"jinja2_version": jinja2.__version__, "results": results}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
