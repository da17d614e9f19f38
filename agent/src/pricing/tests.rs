use std::path::Path;

use super::*;
use crate::money::{Pico, UnitPrice};

/// One valid entry, lines 1–5.
const VALID: &str = "[[model]]\nprovider = \"openai\"\nmodel = \"a\"\ninput = 1\noutput = 2\n";

fn table(text: &str) -> PricingTable {
    PricingTable::parse("t.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

/// (line, key, message) of the error for `text`.
fn invalid(text: &str) -> (usize, String, String) {
    match PricingTable::parse("p.toml", text) {
        Err(PricingError::Invalid { file, line, key, message }) => {
            assert_eq!(file, "p.toml");
            (line, key, message)
        }
        other => panic!("expected an Invalid error for {text:?}, got {other:?}"),
    }
}

/// `VALID` then a second entry (its header is line 6) with these body lines.
fn second(body: &str) -> String {
    format!("{VALID}[[model]]\n{body}")
}

fn assert_err(text: &str, line: usize, key: &str, message_has: &str) {
    let (l, k, m) = invalid(text);
    assert_eq!((l, k.as_str()), (line, key), "{text:?}: {m}");
    assert!(m.contains(message_has), "{text:?}: message {m:?} lacks {message_has:?}");
}

#[test]
fn normalisation() {
    let cases: &[(&str, &str)] = &[
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("GPT-4o-2024-08-06", "gpt-4o"),
        ("  gpt-4.1  ", "gpt-4.1"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("openai/gpt-4o", "gpt-4o"),
        ("models/gpt-4o", "gpt-4o"),
        ("anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-opus-4-1", "claude-opus-4-1"),
        // No guessing beyond that.
        ("gpt-4-0613", "gpt-4-0613"),
        ("gpt-4o-2024", "gpt-4o-2024"),
        ("ft:gpt-4o-mini-2024-07-18:acme::9abc", "ft:gpt-4o-mini-2024-07-18:acme::9abc"),
        ("claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022-v2:0"),
        ("azure/gpt-4o", "azure/gpt-4o"),
        ("gpt-4o-mini-tts", "gpt-4o-mini-tts"),
        ("-latest", "-latest"),
        ("-20241022", "-20241022"),
        ("", ""),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_model(raw), *want, "{raw:?}");
    }
}

#[test]
fn cost_is_the_formula_exactly() {
    let t = table(
        "[[model]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 2.5\ncached_input = 1.25\noutput = 10\nreasoning = 20\n",
    );
    let tokens = Tokens { input: 1000, cached_input: 200, output: 300, reasoning: 100 };
    let c = t.cost("openai", "m", tokens).unwrap();
    // 800 × 2.5 + 200 × 1.25 + 200 × 10 + 100 × 20 = 6250 USD per 1M tokens, exactly.
    assert_eq!(c.amount, Pico(6250 * 1_000_000));
    assert_eq!((c.usd, c.model.as_str()), (6250.0 / 1e6, "m"));
    assert_eq!(t.cost("openai", "m", Tokens::default()).unwrap().usd, 0.0);
}

#[test]
fn optional_prices_default_and_subtractions_saturate() {
    let t = table(VALID);
    let (name, p) = t.price("openai", "a").unwrap();
    assert_eq!(
        (name.as_str(), p),
        ("a", Price { input: u(1.0), output: u(2.0), cached_input: u(1.0), reasoning: u(2.0) })
    );
    // More cached than input, more reasoning than output (inconsistent counts): no wrap-around.
    let tokens = Tokens { input: 10, cached_input: 20, output: 5, reasoning: 8 };
    assert_eq!(t.cost("openai", "a", tokens).unwrap().usd, (20.0 * 1.0 + 8.0 * 2.0) / 1e6);
}

#[test]
fn builtin_prices_a_known_call() {
    let t = PricingTable::builtin();
    let tokens = Tokens { input: 1_000_000, output: 1_000_000, ..Tokens::default() };
    let c = t.cost("openai", "gpt-4o-2024-08-06", tokens).unwrap();
    assert_eq!((c.usd, c.model.as_str(), c.amount), (12.5, "gpt-4o", Pico(12_500_000_000_000)));
    let tokens = Tokens { input: 2_000_000, cached_input: 1_000_000, output: 1_000_000, reasoning: 500_000 };
    let c = t.cost("anthropic", "claude-sonnet-4-5-20250929", tokens).unwrap();
    assert_eq!(c.model, "claude-sonnet-4-5");
    assert_eq!(c.usd, (1e6 * 3.0 + 1e6 * 0.30 + 5e5 * 15.0 + 5e5 * 15.0) / 1e6);
    // A snapshot with an entry of its own is priced by it, not by its family.
    assert_eq!(t.price("openai", "gpt-4o-2024-05-13").unwrap().0, "gpt-4o-2024-05-13");
    assert_eq!(t.price("OpenAI", "openai/GPT-4o").unwrap().0, "gpt-4o");
}

#[test]
fn builtin_parses_and_every_entry_is_priced() {
    let t = PricingTable::builtin();
    let d = t.as_of().as_bytes();
    assert!(d.len() == 10 && d[4] == b'-' && d[7] == b'-', "as_of {:?} is not YYYY-MM-DD", t.as_of());
    assert!(t.source().contains("openai.com") && t.source().contains("anthropic.com"), "{}", t.source());
    let required = [
        ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"),
        ("openai", "gpt-5-nano"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "o1"),
        ("openai", "o3"),
        ("openai", "o3-mini"),
        ("openai", "o4-mini"),
        ("openai", "text-embedding-3-small"),
        ("openai", "text-embedding-3-large"),
        ("openai", "text-embedding-ada-002"),
        ("anthropic", "claude-opus-4-1"),
        ("anthropic", "claude-opus-4"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-3-7-sonnet"),
        ("anthropic", "claude-3-5-haiku"),
        ("anthropic", "claude-3-5-sonnet"),
    ];
    for (provider, model) in required {
        assert_eq!(t.price(provider, model).map(|(n, _)| n).as_deref(), Some(model), "{provider} {model}");
    }
    assert!(t.len() >= required.len());
    assert_eq!(t.iter().count(), t.len());
    for (provider, model, p) in t.iter() {
        // Family names, except the one snapshot with a price of its own.
        if model != "gpt-4o-2024-05-13" {
            assert_eq!(normalize_model(model), model, "{provider} {model}: not normalised");
        }
        assert!(p.input > u(0.0) && p.cached_input > u(0.0), "{provider} {model}: {p:?}");
        assert!(p.cached_input <= p.input && p.reasoning == p.output, "{provider} {model}: {p:?}");
        // Embeddings have no output tokens; everything else has a positive output price.
        if model.starts_with("text-embedding-") {
            assert_eq!(p.output, u(0.0), "{provider} {model}");
        } else {
            assert!(p.output > p.input, "{provider} {model}: {p:?}");
        }
    }
}

#[test]
fn builtin_and_snapshot_entries() {
    // gpt-4o-2024-05-13 is the one entry that is not a family name (it has its own price).
    let t = PricingTable::builtin();
    let (_, p) = t.price("openai", "gpt-4o-2024-05-13").unwrap();
    assert_eq!((p.input, p.output), (u(5.0), u(15.0)));
    assert_eq!(t.price("openai", "gpt-4o-2024-11-20").unwrap().1.input, u(2.5));
}

#[test]
fn override_wins_and_adds() {
    let builtin = PricingTable::builtin();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/pricing-override.toml");
    let over = PricingTable::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let n = builtin.len();
    let t = builtin.clone().merged(over);
    assert_eq!(t.len(), n + 2, "one replaced entry, two new ones");
    assert_eq!(t.price("openai", "gpt-4o-2024-08-06").unwrap().1.input, u(2.0));
    assert_eq!(t.price("anthropic", "claude-sonnet-4-5-20250929").unwrap().1.input, u(2.7));
    assert_eq!(t.price("anthropic", "claude-sonnet-4-5").unwrap().1.input, u(3.0));
    let c = t.cost("openai", "openai/gpt-oss-120b", Tokens { input: 1_000_000, ..Tokens::default() }).unwrap();
    assert_eq!((c.usd, c.model.as_str()), (0.1, "gpt-oss-120b"));
    assert_eq!(t.as_of(), format!("{} (override: 2025-11-03)", builtin.as_of()));
    assert!(t.source().starts_with(builtin.source()) && t.source().contains("(override: Acme"), "{}", t.source());
    // An override without as_of/source leaves the description alone.
    let t = builtin.clone().merged(table(VALID));
    assert_eq!((t.as_of(), t.source()), (builtin.as_of(), builtin.source()));
    assert_eq!(t.len(), n + 1);
}

#[test]
fn unknown_models_are_unpriced() {
    let t = PricingTable::builtin();
    let tokens = Tokens { input: 10, output: 10, ..Tokens::default() };
    for (provider, model) in [
        ("openai", "gpt-4-turbo"),
        ("openai", "gpt-4o-mini-tts"),
        ("openai", "ft:gpt-4o-mini-2024-07-18:acme::9abc"),
        ("openai", "claude-sonnet-4-5"),
        ("anthropic", "gpt-4o"),
        ("google", "gpt-4o"),
        ("", ""),
    ] {
        assert_eq!(t.cost(provider, model, tokens), None, "{provider} {model}");
    }
}

#[test]
fn top_level_fields() {
    let t = table("as_of = 2025-08-01\nsource = \"here\"\ncurrency = \"USD\"\n");
    assert_eq!((t.as_of(), t.source(), t.len(), t.is_empty()), ("2025-08-01", "here", 0, true));
    // Prices may be integers or floats, in any TOML spelling.
    let t = table("[[model]]\nprovider = \"Acme\"\nmodel = \"Openai/Big-1\"\ninput = 0x10\noutput = 1_000.5\n");
    assert_eq!(t.price("acme", "big-1").unwrap().1.input, u(16.0));
    assert_eq!(t.price("ACME", "BIG-1").unwrap().1.output, u(1000.5));
}

#[test]
fn bad_prices_are_rejected() {
    let body = "provider = \"openai\"\nmodel = \"b\"\n";
    assert_err(&second(&format!("{body}input = -1.0\noutput = 1\n")), 9, "model[2].input", "negative");
    assert_err(&second(&format!("{body}input = 1\noutput = -3\n")), 10, "model[2].output", "negative");
    assert_err(&second(&format!("{body}input = 1\noutput = inf\n")), 10, "model[2].output", "finite");
    assert_err(
        &second(&format!("{body}input = 1\noutput = 1\ncached_input = nan\n")),
        11,
        "model[2].cached_input",
        "finite",
    );
    assert_err(
        &second(&format!("{body}input = 1\noutput = 1\nreasoning = -inf\n")),
        11,
        "model[2].reasoning",
        "finite",
    );
    assert_err(&second(&format!("{body}input = 1e400\noutput = 1\n")), 9, "model[2].input", "finite");
}

#[test]
fn missing_keys_are_rejected() {
    let header = 6;
    assert_err(&second("model = \"b\"\ninput = 1\noutput = 1\n"), header, "model[2].provider", "missing");
    assert_err(&second("provider = \"openai\"\ninput = 1\noutput = 1\n"), header, "model[2].model", "missing");
    assert_err(&second("provider = \"openai\"\nmodel = \"b\"\noutput = 1\n"), header, "model[2].input", "missing");
    assert_err(&second("provider = \"openai\"\nmodel = \"b\"\ninput = 1\n"), header, "model[2].output", "missing");
    assert_err(&second("provider = \" \"\nmodel = \"b\"\ninput = 1\noutput = 1\n"), 7, "model[2].provider", "empty");
    assert_err(&second("provider = \"x\"\nmodel = \"openai/\"\ninput = 1\noutput = 1\n"), 8, "model[2].model", "");
}

#[test]
fn duplicates_are_rejected() {
    // Same provider and model after lower-casing and prefix removal.
    let text = second("provider = \"OpenAI\"\nmodel = \"openai/A\"\ninput = 1\noutput = 1\n");
    assert_err(&text, 8, "model[2].model", "model[1] has it");
    // The same model from another provider is not a duplicate.
    table(&second("provider = \"anthropic\"\nmodel = \"a\"\ninput = 1\noutput = 1\n"));
}

#[test]
fn unknown_keys_are_rejected() {
    assert_err(&format!("{VALID}colour = 1\n"), 6, "model[1].colour", "unknown key");
    assert_err(&format!("as_of = \"x\"\nasof = \"y\"\n{VALID}"), 2, "asof", "unknown key");
    assert_err(&second("provider = \"x\"\nmodel = \"b\"\ninptu = 1\ninput = 1\noutput = 1\n"), 9, "model[2].inptu", "");
}

#[test]
fn wrong_types_are_rejected() {
    assert_err(
        &second("provider = \"x\"\nmodel = \"b\"\ninput = \"2.5\"\noutput = 1\n"),
        9,
        "model[2].input",
        "number",
    );
    assert_err(&second("provider = 1\nmodel = \"b\"\ninput = 1\noutput = 1\n"), 7, "model[2].provider", "string");
    assert_err(&second("provider = \"x\"\nmodel = [\"b\"]\ninput = 1\noutput = 1\n"), 8, "model[2].model", "string");
    assert_err("as_of = 20250801\n", 1, "as_of", "string");
    assert_err("\n\nsource = true\n", 3, "source", "string");
    assert_err("currency = \"EUR\"\n", 1, "currency", "USD");
    assert_err("model = \"gpt-4o\"\n", 1, "model", "array of tables");
    assert_err("[model]\nprovider = \"x\"\n", 1, "model", "array of tables");
    assert_err("model = [1]\n", 1, "model[1]", "table");
}

#[test]
fn syntax_errors_name_line_and_key() {
    let (line, key, _) = invalid(&second("provider = \"x\"\nmodel = \"b\n"));
    assert_eq!((line, key.as_str()), (8, "model[2].model"));
    let e = PricingTable::parse("/etc/p.toml", "[[model]\n").unwrap_err();
    assert!(e.to_string().starts_with("/etc/p.toml:1: "), "{e}");
}

#[test]
fn errors_display_as_file_line_key_message() {
    let e = PricingTable::parse("p.toml", &format!("{VALID}x = 1\n")).unwrap_err();
    assert_eq!(e.to_string(), "p.toml:6: model[1].x: unknown key \"x\", expected one of provider, model, input, output, cached_input, reasoning");
    let e = PricingTable::load(Path::new("/nonexistent/prices.toml")).unwrap_err();
    assert!(matches!(&e, PricingError::Read { file, .. } if file == "/nonexistent/prices.toml"), "{e}");
    assert!(e.to_string().starts_with("/nonexistent/prices.toml: cannot read: "), "{e}");
}

/// Random text and random edits of the built-in table: parse errors, never panics.
#[test]
fn garbage_never_panics() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const PIECES: &[&str] = &[
        "[[model]]",
        "[model]",
        "[",
        "]",
        "provider",
        "model",
        "input",
        "output",
        "cached_input",
        "reasoning",
        "as_of",
        "source",
        "currency",
        " = ",
        "=",
        "\"",
        "'",
        "\"\"\"",
        "\n",
        "\r\n",
        " ",
        "\t",
        "1.5",
        "-2",
        "inf",
        "nan",
        "0x1F",
        "1e999",
        "2025-08-01",
        "#",
        "é",
        "\u{0}",
        "{",
        "}",
        ",",
        ".",
        "\\",
        "gpt-4o",
        "\"openai\"",
    ];
    let builtin: Vec<char> = BUILTIN.chars().collect();
    let t = PricingTable::builtin();
    let mut parsed = 0;
    for round in 0..1500 {
        let text: String = if round % 2 == 0 {
            (0..next() % 60).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect()
        } else {
            let mut chars = builtin.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % (chars.len() as u64 + 1)) as usize;
                match next() % 3 {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, PIECES[(next() % PIECES.len() as u64) as usize].chars().next().unwrap()),
                    _ if at < chars.len() => chars[at] = char::from_u32((next() % 0x80) as u32).unwrap(),
                    _ => {}
                }
            }
            chars.into_iter().collect()
        };
        match PricingTable::parse("g.toml", &text) {
            Ok(g) => {
                parsed += 1;
                let _ = g.merged(t.clone()).cost("openai", &text, Tokens { input: u64::MAX, ..Tokens::default() });
            }
            Err(PricingError::Invalid { line, .. }) => assert!(line >= 1 && line <= text.lines().count().max(1) + 1),
            Err(e) => panic!("{e}"),
        }
        let _ = normalize_model(&text);
    }
    assert!(parsed > 0, "no mutation of the built-in table parsed; the test explores nothing");
}

fn u(usd_per_million: f64) -> UnitPrice {
    UnitPrice::from_usd_per_million(usd_per_million).expect("an exact price")
}

#[test]
fn prices_are_held_exactly_or_refused() {
    let t = table("[[model]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 0.075\noutput = 1_000\n");
    let (_, p) = t.price("openai", "m").unwrap();
    assert_eq!((p.input, p.output), (UnitPrice(75_000), UnitPrice(1_000_000_000)));
    let e = PricingTable::parse(
        "p.toml",
        "[[model]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 0.0000001\noutput = 1\n",
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("p.toml:4: model[1].input:") && e.to_string().contains("6 decimal"), "{e}");
}
