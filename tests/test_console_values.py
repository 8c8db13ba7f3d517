"""The console's value text and typed JSON: what it shows is exactly what it reads back.

Properties: for any plain JS value, the Deno-style text the page shows parses
back to the same value, and the export's typed JSON imports to the same value;
any key's text parses back to the same key. Against real Deno: numbers are
printed as JavaScript prints them, and values Deno wrote are shown as Deno
would show them.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from v8serialize.jstypes import JSBigInt, JSMap, JSSet, JSUndefined

from denokv.console.jsvalue import decode_exact, js_number, show, show_key
from denokv.console.literal import LiteralError, parse_key, parse_value
from denokv.console.transfer import tag_stored, untag
from denokv.keys import KeyPart, decode_key, encode_key
from denokv.values import KvU64, encode_value
from tests.support.deno import deno_binary, deno_env
from tests.support.paths import DENO_SCRIPTS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

scalars = st.one_of(
    st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF)),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**200), 2**200).map(JSBigInt),
    st.booleans(),
    st.none(),
    st.just(JSUndefined),
    st.integers(-62135596800000, 253402300799999).map(
        lambda ms: _EPOCH + timedelta(milliseconds=ms)
    ),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
        st.lists(st.tuples(inner, inner), max_size=3).map(JSMap),
        st.lists(inner, max_size=3).map(JSSet),
    ),
    max_leaves=12,
)
key_parts = st.one_of(
    st.text(), st.floats(allow_nan=False), st.integers(-(2**64), 2**64), st.booleans(), st.binary()
)


def shown(value: object) -> str:
    return show(decode_exact(*encode_value(value)))


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_text_shown_reads_back_as_the_same_value(value: object) -> None:
    text = shown(value)
    assert shown(parse_value(text)) == text
    flat = show(decode_exact(*encode_value(value)), width=None)
    assert shown(parse_value(flat)) == text


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_typed_json_imports_as_the_same_value(value: object) -> None:
    data, encoding = encode_value(value)
    tagged = json.loads(json.dumps(tag_stored(data, encoding)))
    if "v8" in tagged:  # only values holding the same object twice take the raw form
        return
    again = encode_value(untag(tagged, top=True))
    assert show(decode_exact(*again)) == show(decode_exact(data, encoding))


@settings(max_examples=300, deadline=None)
@given(st.lists(key_parts, max_size=5))
def test_key_text_reads_back_as_the_same_key(parts: list[KeyPart]) -> None:
    key = encode_key(parts)
    text = show_key(decode_key(key))
    assert encode_key(parse_key(text)) == key


def test_one_one_n_and_quoted_one_are_three_values() -> None:
    assert type(parse_value("1")) is int
    assert isinstance(parse_value("1n"), JSBigInt)
    assert parse_value('"1"') == "1"
    assert parse_key("[1, 1n]") == (1.0, 1)
    assert isinstance(parse_value("[Deno.KvU64: 5n]"), KvU64)
    minus_zero = parse_value("-0")
    assert isinstance(minus_zero, float) and math.copysign(1, minus_zero) == -1


@pytest.mark.parametrize(
    "text", ["{ a: [Deno.KvU64: 1n] }", "foo", "1.5n", '"open', "[1,", "new Evil()"]
)
def test_bad_literals_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(LiteralError, match="at character"):
        parse_value(text)


def test_shared_references_keep_their_v8_bytes() -> None:
    shared = {"s": 1}
    data, encoding = encode_value([shared, shared])
    assert "v8" in tag_stored(data, encoding)


@pytest.mark.deno
def test_numbers_print_as_javascript_prints_them(tmp_path: Path) -> None:
    import random

    rng = random.Random(12)
    numbers = [0.1, 1e21, 1e-7, 123e-20, 2**53, 1.7976931348623157e308, 5e-324, 100, 1e20, 0.000001]
    numbers += [rng.uniform(-1e6, 1e6) for _ in range(200)]
    numbers += [math.ldexp(rng.random(), rng.randint(-1070, 1020)) for _ in range(300)]
    script = tmp_path / "numbers.ts"
    script.write_text(
        "const xs = JSON.parse(Deno.args[0]); console.log(JSON.stringify(xs.map(String)));"
    )
    proc = subprocess.run(
        [deno_binary(), "run", str(script), json.dumps(numbers)],
        env=deno_env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [js_number(x) for x in numbers] == json.loads(proc.stdout)


@pytest.mark.deno
def test_values_deno_wrote_are_shown_as_deno_shows_them(tmp_path: Path) -> None:
    db = tmp_path / "values.sqlite"
    script = str(DENO_SCRIPTS / "values_write.ts")
    subprocess.run(
        [deno_binary(), "run", "--unstable-kv", "-A", script, str(db)],
        env=deno_env(), capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    conn = sqlite3.connect(db)
    rows = {decode_key(k)[1]: show(decode_exact(v, e))
            for k, v, e in conn.execute("select k, v, v_encoding from kv")}  # fmt: skip
    conn.close()
    expected = {
        "str_lone_surrogate": '"a\\ud800b"',
        "num_neg_zero": "-0",
        "num_nan": "NaN",
        "bigint_neg": "-12345678901234567890n",
        "undefined": "undefined",
        "object_int_keys": '{ "0": "zero", "1": "one", b: 2 }',
        "array_sparse": '[ 1, <1 empty item>, 3, <7 empty items>, "x" ]',
        "array_with_prop": "[ 1, 2, extra: true ]",
        "date": "2024-01-02T03:04:05.678Z",
        "date_invalid": "Invalid Date",
        "map": 'Map(3) { "k" => 1, 2 => "v", 3n => { z: true } }',
        "set": 'Set(3) { 1, "two", 3n }',
        "regexp": "/ab+c/gi",
        "u8_in_object": "{ data: Uint8Array(3) [ 1, 2, 255 ] }",
        "int16array": "Int16Array(3) [ -1, 2, 300 ]",
        "bigint64array": "BigInt64Array(2) [ -1n, 2n ]",
        "boxed_number": "[Number: 1.5]",
        "boxed_string": '[String: "boxed"]',
        "type_error": "TypeError: bad type",
        "cyclic": '{ name: "loop", self: [Circular] }',
        "u64_max": "[Deno.KvU64: 18446744073709551615n]",
        "u8_top": "Uint8Array(2) [ 1, 2 ]",
        "float16array": "Float16Array(2) [ 1.5, -2 ]",
    }
    assert {name: rows[name] for name in expected} == expected
