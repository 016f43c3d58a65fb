//! The generated pages describe every option the binaries accept, the
//! completions know the subcommands, and shifter.toml(5) names every key
//! runtime-core accepts, with an example runtime-core parses.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use clap::Command;
use serde_json::Value;

fn generated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    shifter_docs::generate(dir.path()).unwrap();
    dir
}

/// Every long option of `cmd` and its subcommands, with the page it belongs on.
fn long_options(cmd: &Command, page: &str, out: &mut Vec<(String, String)>) {
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            out.push((page.to_owned(), long.to_owned()));
        }
    }
    for sub in cmd.get_subcommands() {
        long_options(sub, &format!("{page}-{}", sub.get_name()), out);
    }
}

#[test]
fn every_option_of_every_command_is_on_its_man_page() {
    let dir = generated();
    let mut checked = 0;
    for page in shifter_docs::pages() {
        let mut options = Vec::new();
        long_options(&page.command, page.command.get_name(), &mut options);
        for (name, long) in options {
            let file = dir
                .path()
                .join(format!("man/man{}/{name}.{}", page.section, page.section));
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{} missing: {e}", file.display()));
            // roff escapes '-' as '\-'.
            let needle = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(
                text.contains(&needle),
                "{} does not document --{long}",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} options found");
    for page in [
        "man1/shifter.1",
        "man1/shifterimg.1",
        "man1/shifterimg-pull.1",
        "man1/shifter-config.1",
        "man8/shifter-imagegw.8",
        "man5/shifter.toml.5",
    ] {
        let text = fs::read_to_string(dir.path().join("man").join(page)).unwrap();
        assert!(text.starts_with(".TH") || text.contains("\n.TH"), "{page}");
    }
}

#[test]
fn completions_know_the_subcommands() {
    let dir = generated();
    let bash = fs::read_to_string(dir.path().join("completions/bash/shifterimg")).unwrap();
    let zsh = fs::read_to_string(dir.path().join("completions/zsh/_shifterimg")).unwrap();
    for sub in ["pull", "images", "lookup", "login", "expire"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
        assert!(zsh.contains(sub), "zsh completion lacks {sub}");
    }
    assert!(zsh.starts_with("#compdef shifterimg"));
    for name in ["shifter", "shifter-imagegw", "shifter-config"] {
        let bash = fs::read_to_string(dir.path().join("completions/bash").join(name)).unwrap();
        assert!(bash.contains("complete -F"), "{name}");
        assert!(dir
            .path()
            .join(format!("completions/zsh/_{name}"))
            .is_file());
    }
}

/// The lines between `.SH EXAMPLE` / `.nf` and `.fi`.
fn example(page: &str) -> String {
    let from = page.find(".SH EXAMPLE").expect("an EXAMPLE section");
    let body = &page[from..];
    let start = body.find(".nf\n").unwrap() + 4;
    let end = body.find("\n.fi").unwrap();
    body[start..end].to_owned()
}

fn keys(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn shifter_toml_5_names_every_key_and_its_example_parses() {
    let page = shifter_docs::SHIFTER_TOML_5;
    let config = runtime_core::Config::parse(&example(page), Path::new("shifter.toml(5)"))
        .expect("the man page's example is a valid shifter.toml");
    let mut names = BTreeSet::new();
    keys(&serde_json::to_value(&config).unwrap(), &mut names);
    // Keys of the example's own tables (site_env values, module names) are data.
    for data in ["SITE", "PATH", "MANPATH", "gpu"] {
        names.remove(data);
    }
    assert!(names.len() > 30, "{names:?}");
    let documented = |k: &str| {
        page.lines().any(|l| {
            l.split(|c: char| c.is_whitespace() || ",[]().".contains(c))
                .any(|w| w == k)
                && (l.starts_with(".B") || l.starts_with(".TP"))
        })
    };
    let missing: Vec<_> = names.iter().filter(|k| !documented(k)).collect();
    assert!(
        missing.is_empty(),
        "runtime-core accepts {missing:?}: document them in crates/shifter-docs/man/shifter.toml.5"
    );
}
