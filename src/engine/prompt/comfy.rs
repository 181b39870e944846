//! ComfyUI's emphasis syntax (`token_weights` in `comfy/sd1_clip.py`): `(x)` multiplies by 1.1,
//! but `(x:w)` *sets* the weight to `w`; square brackets, `BREAK` and `\[` are plain text; only
//! `\(` and `\)` escape. A weight that is not a finite number leaves the text as it is (ComfyUI
//! would turn an `inf` into a black picture).

use super::attention::python_float;
use super::Segment;

/// Stand-ins ComfyUI swaps in for escaped brackets while it parses.
const ESCAPED_CLOSE: &str = "\u{0}\u{1}";
const ESCAPED_OPEN: &str = "\u{0}\u{2}";

/// The prompt's pieces with their weights, as ComfyUI reads them.
pub fn parse(text: &str) -> Vec<Segment> {
    let escaped = text.replace("\\)", ESCAPED_CLOSE).replace("\\(", ESCAPED_OPEN);
    let mut out = Vec::new();
    weights(&escaped, 1.0, &mut out);
    out.into_iter()
        .map(|(t, w)| Segment::Text(t.replace(ESCAPED_CLOSE, ")").replace(ESCAPED_OPEN, "("), w))
        .collect()
}

/// ComfyUI's `parse_parentheses`: top-level groups and the text between them.
fn groups(text: &str) -> Vec<String> {
    let mut result = Vec::new();
    let mut current = String::new();
    let mut depth: i64 = 0;
    for c in text.chars() {
        match c {
            '(' => {
                if depth == 0 {
                    if !current.is_empty() {
                        result.push(std::mem::take(&mut current));
                    }
                    current = "(".into();
                } else {
                    current.push(c);
                }
                depth += 1;
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    current.push(')');
                    result.push(std::mem::take(&mut current));
                } else {
                    current.push(c);
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        result.push(current);
    }
    result
}

fn weights(text: &str, current: f64, out: &mut Vec<(String, f64)>) {
    for group in groups(text) {
        if group.len() >= 2 && group.starts_with('(') && group.ends_with(')') {
            let mut inner = &group[1..group.len() - 1];
            let mut weight = current * 1.1;
            if let Some(colon) = inner.rfind(':').filter(|&i| i > 0) {
                if let Some(w) = python_float(&inner[colon + 1..]).filter(|w| w.is_finite()) {
                    weight = w;
                    inner = &inner[..colon];
                }
            }
            weights(inner, weight, out);
        } else {
            out.push((group, current));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_sets_rather_than_multiplies() {
        let got = parse("a ((b:1.3)) [c] \\(d\\)");
        assert_eq!(
            got,
            [
                Segment::Text("a ".into(), 1.0),
                Segment::Text("b".into(), 1.3),
                Segment::Text(" [c] (d)".into(), 1.0),
            ]
        );
        assert_eq!(parse("(x)"), [Segment::Text("x".into(), 1.1)]);
    }
}
