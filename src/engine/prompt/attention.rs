//! A1111's emphasis syntax (`parse_prompt_attention` in `modules/prompt_parser.py`), read the same
//! way token by token: `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:w)` multiplies by `w`,
//! brackets nest by multiplying, `\(` `\)` `\[` `\]` `\\` are literal characters, a bracket left
//! open applies to the end of the prompt, a closing bracket with nothing open is plain text, and
//! `BREAK` (a whole word, in capitals) starts a new 75-token chunk. Runs of equal weight merge.

use super::Segment;

/// One piece A1111's tokenizing regex matches.
enum Token<'a> {
    /// `\x`: a literal character (a lone `\` at the end gives nothing).
    Escaped(&'a str),
    Open,
    OpenSquare,
    /// `:w)` — the whole match and the weight's text.
    WeightClose(&'a str, &'a str),
    Close,
    CloseSquare,
    /// Text without brackets, backslashes or colons, or a lone colon.
    Text(&'a str),
}

/// Splits `text` the way A1111's `re_attention` does (alternatives tried in its order).
fn tokens(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let c = bytes[i];
        if c == b'\\' {
            // `\(`, `\)`, `\[`, `\]`, `\\` keep the second character; any other `\` is dropped.
            match bytes.get(i + 1) {
                Some(b'(' | b')' | b'[' | b']' | b'\\') => {
                    out.push(Token::Escaped(&text[i + 1..i + 2]));
                    i += 2;
                }
                _ => {
                    out.push(Token::Escaped(""));
                    i += 1;
                }
            }
            continue;
        }
        match c {
            b'(' => out.push(Token::Open),
            b'[' => out.push(Token::OpenSquare),
            b')' => out.push(Token::Close),
            b']' => out.push(Token::CloseSquare),
            b':' => {
                if let Some(len) = weight_close_len(rest) {
                    let inner = rest[1..len - 1].trim();
                    out.push(Token::WeightClose(&rest[..len], inner));
                    i += len;
                    continue;
                }
                out.push(Token::Text(":"));
            }
            _ => {
                let end = rest.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(rest.len());
                out.push(Token::Text(&rest[..end]));
                i += end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Length of `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`, if it matches.
fn weight_close_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    let skip_space = |mut i: usize| {
        while i < b.len() && is_py_space(s, i) {
            i += s[i..].chars().next().map_or(1, char::len_utf8);
        }
        i
    };
    i = skip_space(i);
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = i;
    while i < b.len() && (b[i] == b'.' || b[i].is_ascii_digit()) {
        i += 1;
    }
    if i == digits {
        return None;
    }
    i = skip_space(i);
    (i < b.len() && b[i] == b')').then_some(i + 1)
}

/// Whether the character at byte `i` is whitespace as Python's `\s` sees it.
fn is_py_space(s: &str, i: usize) -> bool {
    s[i..].chars().next().is_some_and(char::is_whitespace)
}

/// The prompt's pieces with their weights, exactly as A1111 reads them.
pub fn parse(text: &str) -> Vec<Segment> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, f64)>, from: usize, by: f64| {
        for item in &mut res[from..] {
            item.1 *= by;
        }
    };
    for token in tokens(text) {
        match token {
            Token::Escaped(s) => res.push((s.to_string(), 1.0)),
            Token::Open => round.push(res.len()),
            Token::OpenSquare => square.push(res.len()),
            Token::WeightClose(_, w) if !round.is_empty() => match python_float(w) {
                Some(weight) => {
                    let from = round.pop().unwrap_or(0);
                    multiply(&mut res, from, weight);
                }
                // A1111 fails the whole generation on a weight such as `1.2.3`; Easel keeps the
                // text and closes the bracket as a plain `)`.
                None => {
                    res.push((format!(":{w}"), 1.0));
                    let from = round.pop().unwrap_or(0);
                    multiply(&mut res, from, ROUND);
                }
            },
            Token::Close if !round.is_empty() => {
                let from = round.pop().unwrap_or(0);
                multiply(&mut res, from, ROUND);
            }
            Token::CloseSquare if !square.is_empty() => {
                let from = square.pop().unwrap_or(0);
                multiply(&mut res, from, SQUARE);
            }
            Token::WeightClose(..) | Token::Close | Token::CloseSquare | Token::Text(_) => {
                push_with_breaks(&mut res, token_text(&token));
            }
        }
    }
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    merged
        .into_iter()
        .map(|(text, weight)| {
            if weight == BREAK_MARK && text == "BREAK" {
                Segment::Break
            } else {
                Segment::Text(text, weight)
            }
        })
        .collect()
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;
/// A1111 marks `BREAK` with the weight −1 before runs merge.
const BREAK_MARK: f64 = -1.0;

/// The original text of a token that is read as plain text.
fn token_text<'a>(token: &Token<'a>) -> &'a str {
    match token {
        Token::Text(s) | Token::WeightClose(s, _) => s,
        Token::Close => ")",
        Token::CloseSquare => "]",
        _ => "",
    }
}

/// Appends `text`, split at every `BREAK` word (with the whitespace around it).
fn push_with_breaks(res: &mut Vec<(String, f64)>, text: &str) {
    for (i, part) in split_break(text).into_iter().enumerate() {
        if i > 0 {
            res.push(("BREAK".into(), BREAK_MARK));
        }
        res.push((part.to_string(), 1.0));
    }
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_break(text: &str) -> Vec<&str> {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| regex::Regex::new(r"\s*\bBREAK\b\s*").expect("a valid pattern"));
    pattern.split(text).collect()
}

/// Python's `float()` on a weight: surrounding whitespace, `_` between digits, `inf`/`nan`.
pub fn python_float(s: &str) -> Option<f64> {
    let s = s.trim();
    let cleaned: String = if s.contains('_') {
        let b = s.as_bytes();
        let ok = b.iter().enumerate().all(|(i, &c)| {
            c != b'_' || (i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
        });
        if !ok {
            return None;
        }
        s.replace('_', "")
    } else {
        s.to_string()
    };
    cleaned.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, f64)> {
        parse(text)
            .into_iter()
            .map(|s| match s {
                Segment::Text(t, w) => (t, w),
                Segment::Break => ("BREAK".into(), -1.0),
            })
            .collect()
    }

    #[test]
    fn a1111s_doctest() {
        let got = pairs("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).");
        let want = [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((t, w), (wt, ww)) in got.iter().zip(want) {
            assert_eq!((t.as_str(), *w), (wt, ww));
        }
    }

    #[test]
    fn escapes_unbalanced_and_breaks() {
        assert_eq!(pairs(r"\(literal\]"), [("(literal]".to_string(), 1.0)]);
        assert_eq!(pairs("(unbalanced"), [("unbalanced".to_string(), 1.1)]);
        assert_eq!(pairs("(unnecessary)(parens)"), [("unnecessaryparens".to_string(), 1.1)]);
        let got = parse("a BREAK b");
        assert_eq!(got, [Segment::Text("a".into(), 1.0), Segment::Break, Segment::Text("b".into(), 1.0)]);
        assert_eq!(pairs(""), [(String::new(), 1.0)]);
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(" 1.5 "), Some(1.5));
        assert_eq!(python_float("1_0"), Some(10.0));
        assert_eq!(python_float("1.2.3"), None);
        assert_eq!(python_float("."), None);
    }
}
