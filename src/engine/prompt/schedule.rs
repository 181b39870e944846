//! A1111's prompt editing and alternation (`get_learned_conditioning_prompt_schedules`):
//! `[from:to:when]`, `[to:when]`, `[from::when]` switch text at a step (`when` below 1, written
//! with a dot, is a fraction of the steps), and `[a|b|c]` cycles through its options every step.
//! A1111 parses with a lark grammar; this is a backtracking reader of the same grammar that takes
//! an editing or alternation construct wherever one parses, as lark's resolution does. A prompt
//! the grammar cannot read (a `|` outside brackets, a trailing lone `\`) is used as it is.

/// One piece of a parsed prompt.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// Text kept as written (plain text and emphasis brackets alike).
    Text(String),
    /// `[before:after:when]`; `when` is the number as written.
    Scheduled { before: Vec<Node>, after: Vec<Node>, when: String },
    /// `[a|b|…]`.
    Alternate(Vec<Vec<Node>>),
}

/// The prompt's texts and the last step (1-based, inclusive) each is used for, for `steps`
/// sampling steps, ending with `steps`.
pub fn schedule(prompt: &str, steps: usize) -> Vec<(usize, String)> {
    let chars: Vec<char> = prompt.chars().collect();
    let Some(tree) = parse_start(&chars) else {
        return vec![(steps, prompt.to_string())];
    };
    let mut ends = vec![steps];
    collect_steps(&tree, steps, &mut ends);
    ends.sort_unstable();
    ends.dedup();
    ends.into_iter()
        .map(|step| {
            let mut text = String::new();
            render(&tree, step, steps, &mut text);
            (step, text)
        })
        .collect()
}

/// A1111's step for a `when`: a number with a dot is a fraction of the steps; the result is
/// truncated and never past the last step (it may be zero or negative: then `after` from the start).
fn when_step(when: &str, steps: usize) -> i64 {
    let v: f64 = when.parse().unwrap_or(0.0);
    let v = if when.contains('.') { v * steps as f64 } else { v };
    // Python's int() truncates; Easel saturates where A1111 would overflow on `1e400`.
    let v = if v.is_nan() { 0 } else { v.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64 };
    v.min(steps as i64)
}

fn collect_steps(nodes: &[Node], steps: usize, ends: &mut Vec<usize>) {
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Scheduled { before, after, when } => {
                collect_steps(before, steps, ends);
                collect_steps(after, steps, ends);
                let at = when_step(when, steps);
                if at >= 1 {
                    ends.push(at as usize);
                }
            }
            Node::Alternate(options) => {
                for option in options {
                    collect_steps(option, steps, ends);
                }
                ends.extend(1..=steps);
            }
        }
    }
}

fn render(nodes: &[Node], step: usize, steps: usize, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Scheduled { before, after, when } => {
                let chosen = if step as i64 <= when_step(when, steps) { before } else { after };
                render(chosen, step, steps, out);
            }
            Node::Alternate(options) => render(&options[(step - 1) % options.len()], step, steps, out),
        }
    }
}

/// `start: (prompt | /[][():]/+)*` — stray brackets and colons are literal at the top level.
fn parse_start(chars: &[char]) -> Option<Vec<Node>> {
    let mut nodes = Vec::new();
    let mut pos = 0;
    loop {
        let (mut part, next) = parse_prompt(chars, pos);
        nodes.append(&mut part);
        pos = next;
        match chars.get(pos) {
            None => return Some(nodes),
            Some(&c) if "[]():".contains(c) => {
                nodes.push(Node::Text(c.to_string()));
                pos += 1;
            }
            Some(_) => return None,
        }
    }
}

/// `prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*`, as far as it reads.
fn parse_prompt(chars: &[char], mut pos: usize) -> (Vec<Node>, usize) {
    let mut nodes = Vec::new();
    let mut plain = String::new();
    while let Some(&c) = chars.get(pos) {
        let construct = match c {
            '(' => parse_round(chars, pos),
            '[' => parse_scheduled(chars, pos)
                .or_else(|| parse_alternate(chars, pos))
                .or_else(|| parse_square(chars, pos)),
            ')' | ']' | ':' | '|' => None,
            '\\' => match chars.get(pos + 1) {
                Some(&next) => {
                    plain.push(c);
                    plain.push(next);
                    pos += 2;
                    continue;
                }
                None => None,
            },
            _ => {
                plain.push(c);
                pos += 1;
                continue;
            }
        };
        let Some((mut found, next)) = construct else { break };
        if !plain.is_empty() {
            nodes.push(Node::Text(std::mem::take(&mut plain)));
        }
        nodes.append(&mut found);
        pos = next;
    }
    if !plain.is_empty() {
        nodes.push(Node::Text(plain));
    }
    (nodes, pos)
}

/// `"(" prompt ")" | "(" prompt ":" prompt ")"`, kept as text with its brackets.
fn parse_round(chars: &[char], pos: usize) -> Option<(Vec<Node>, usize)> {
    let (mut inner, mut at) = parse_prompt(chars, pos + 1);
    let mut nodes = vec![Node::Text("(".into())];
    nodes.append(&mut inner);
    if chars.get(at) == Some(&':') {
        nodes.push(Node::Text(":".into()));
        let (mut second, next) = parse_prompt(chars, at + 1);
        nodes.append(&mut second);
        at = next;
    }
    (chars.get(at) == Some(&')')).then(|| {
        nodes.push(Node::Text(")".into()));
        (nodes, at + 1)
    })
}

/// `"[" prompt "]"`, kept as text with its brackets.
fn parse_square(chars: &[char], pos: usize) -> Option<(Vec<Node>, usize)> {
    let (mut inner, at) = parse_prompt(chars, pos + 1);
    (chars.get(at) == Some(&']')).then(|| {
        let mut nodes = vec![Node::Text("[".into())];
        nodes.append(&mut inner);
        nodes.push(Node::Text("]".into()));
        (nodes, at + 1)
    })
}

/// `"[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"`.
fn parse_scheduled(chars: &[char], pos: usize) -> Option<(Vec<Node>, usize)> {
    let (first, at) = parse_prompt(chars, pos + 1);
    if chars.get(at) != Some(&':') {
        return None;
    }
    // `[from:to:when]`
    let (second, at2) = parse_prompt(chars, at + 1);
    if chars.get(at2) == Some(&':') {
        if let Some((when, end)) = parse_when(chars, at2 + 1) {
            let node = Node::Scheduled { before: first, after: second, when };
            return Some((vec![node], end));
        }
    }
    // `[to:when]`
    let (when, end) = parse_when(chars, at + 1)?;
    Some((vec![Node::Scheduled { before: Vec::new(), after: first, when }], end))
}

/// `[WHITESPACE] NUMBER [WHITESPACE] "]"`: the number's text and the position after `]`.
fn parse_when(chars: &[char], mut pos: usize) -> Option<(String, usize)> {
    while chars.get(pos).is_some_and(|c| c.is_whitespace()) {
        pos += 1;
    }
    let len = signed_number_len(&chars[pos..])?;
    let number: String = chars[pos..pos + len].iter().collect();
    pos += len;
    while chars.get(pos).is_some_and(|c| c.is_whitespace()) {
        pos += 1;
    }
    (chars.get(pos) == Some(&']')).then_some((number, pos + 1))
}

/// lark's `SIGNED_NUMBER`: `[+-]? (INT exp | INT "." INT? exp? | "." INT exp? | INT)`.
fn signed_number_len(c: &[char]) -> Option<usize> {
    let digits = |from: usize| c[from.min(c.len())..].iter().take_while(|d| d.is_ascii_digit()).count();
    let mut i = usize::from(matches!(c.first(), Some('+' | '-')));
    let int = digits(i);
    i += int;
    let mut frac = 0;
    if c.get(i) == Some(&'.') {
        frac = digits(i + 1);
        if int == 0 && frac == 0 {
            return None;
        }
        i += 1 + frac;
    } else if int == 0 {
        return None;
    }
    if matches!(c.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(c.get(j), Some('+' | '-')) {
            j += 1;
        }
        let exp = digits(j);
        if exp > 0 {
            i = j + exp;
        }
    }
    let _ = frac;
    Some(i)
}

/// `"[" prompt ("|" [prompt])+ "]"`.
fn parse_alternate(chars: &[char], pos: usize) -> Option<(Vec<Node>, usize)> {
    let (first, mut at) = parse_prompt(chars, pos + 1);
    let mut options = vec![first];
    while chars.get(at) == Some(&'|') {
        let (next, after) = parse_prompt(chars, at + 1);
        options.push(next);
        at = after;
    }
    (options.len() > 1 && chars.get(at) == Some(&']')).then(|| (vec![Node::Alternate(options)], at + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(prompt: &str) -> Vec<(usize, String)> {
        schedule(prompt, 10)
    }

    fn s(items: &[(usize, &str)]) -> Vec<(usize, String)> {
        items.iter().map(|(a, b)| (*a, b.to_string())).collect()
    }

    #[test]
    fn a1111s_doctests() {
        assert_eq!(g("test"), s(&[(10, "test")]));
        assert_eq!(g("a [b:3]"), s(&[(3, "a "), (10, "a b")]));
        assert_eq!(g("a [b: 3]"), s(&[(3, "a "), (10, "a b")]));
        assert_eq!(g("a [[[b]]:2]"), s(&[(2, "a "), (10, "a [[b]]")]));
        assert_eq!(g("[(a:2):3]"), s(&[(3, ""), (10, "(a:2)")]));
        assert_eq!(g("a [b : c : 1] d"), s(&[(1, "a b  d"), (10, "a  c  d")]));
        assert_eq!(g("a[b:[c:d:2]:1]e"), s(&[(1, "abe"), (2, "ace"), (10, "ade")]));
        assert_eq!(g("a [unbalanced"), s(&[(10, "a [unbalanced")]));
        assert_eq!(g("a [b:.5] c"), s(&[(5, "a  c"), (10, "a b c")]));
        // A1111's docstring expects an edit here, but its lark grammar rejects the `|` and the
        // prompt is used as written; Easel follows what the code does.
        assert_eq!(g("a [{b|d{:.5] c"), s(&[(10, "a [{b|d{:.5] c")]));
        assert_eq!(g("((a][:b:c [d:3]"), s(&[(3, "((a][:b:c "), (10, "((a][:b:c d")]));
        let alternating: Vec<(usize, String)> =
            (1..=10).map(|i| (i, if i % 2 == 1 { "a" } else { "(b:1.1)" }.to_string())).collect();
        assert_eq!(g("[a|(b:1.1)]"), alternating);
        let female: Vec<(usize, String)> =
            (1..=10).map(|i| (i, if i % 2 == 1 { "female" } else { "male" }.to_string())).collect();
        assert_eq!(g("[fe|]male"), female);
        let four: Vec<(usize, String)> =
            (1..=10).map(|i| (i, if i % 4 == 1 { "female" } else { "male" }.to_string())).collect();
        assert_eq!(g("[fe|||]male"), four);
    }

    #[test]
    fn unreadable_prompts_are_used_as_written() {
        assert_eq!(g("a | b"), s(&[(10, "a | b")]));
        assert_eq!(g("trailing \\"), s(&[(10, "trailing \\")]));
    }
}
