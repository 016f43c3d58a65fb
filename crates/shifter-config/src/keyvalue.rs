//! Reader for Shifter's `key=value` files: `#` starts a comment line, a line
//! without `=` is skipped (as Shifter does), a trailing `\` continues the value
//! on the next line. Each entry keeps the line it started on for messages.

/// One `key=value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// 1-based line where the key appears.
    pub line: usize,
}

pub fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut open: Option<Entry> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        if let Some(mut entry) = open.take() {
            let (part, more) = continuation(raw.trim());
            if !part.is_empty() {
                if !entry.value.is_empty() {
                    entry.value.push(' ');
                }
                entry.value.push_str(part);
            }
            if more {
                open = Some(entry);
            } else {
                entries.push(entry);
            }
            continue;
        }
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = raw.split_once('=') else {
            continue;
        };
        let (value, more) = continuation(value.trim());
        let entry = Entry {
            key: key.trim().to_owned(),
            value: value.to_owned(),
            line: line_no,
        };
        if more {
            open = Some(entry);
        } else {
            entries.push(entry);
        }
    }
    entries.extend(open);
    entries
}

fn continuation(value: &str) -> (&str, bool) {
    match value.strip_suffix('\\') {
        Some(v) => (v.trim_end(), true),
        None => (value, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_lines_without_equals_are_skipped() {
        let e = parse("# system=no\n\njunk line\nsystem = c1 \n");
        assert_eq!(
            e,
            vec![Entry {
                key: "system".into(),
                value: "c1".into(),
                line: 4
            }]
        );
    }

    #[test]
    fn backslash_continues_a_value_and_keeps_the_first_line_number() {
        let e = parse("a=1\nsiteEnv=A=1 \\\n   B=2 \\\n C=3\nb=2\n");
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].key, "siteEnv");
        assert_eq!(e[1].value, "A=1 B=2 C=3");
        assert_eq!(e[1].line, 2);
        assert_eq!(e[2].line, 5);
    }

    #[test]
    fn value_may_contain_equals_signs() {
        let e = parse("siteEnv=SHIFTER_RUNTIME=1\n");
        assert_eq!(e[0].value, "SHIFTER_RUNTIME=1");
    }

    #[test]
    fn empty_value_is_kept() {
        let e = parse("nodeContextPrefix=\n");
        assert_eq!(e[0].value, "");
    }
}
