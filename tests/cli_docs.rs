//! The CLI's shell completions and man page, generated from its clap
//! definition: each names the real subcommands and options, and the bash
//! script completes a word when bash runs it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_decnet-agent-client");

fn output(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Subcommands and options (without their dashes: fish writes `-l NAME`)
/// every generated file must know.
const NAMES: [&str; 5] = [
    "identity-ensure",
    "topology-apply",
    "updater",
    "host-json",
    "no-resumption",
];

#[test]
fn completions_know_every_subcommand_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _decnet__agent__client"),
        ("zsh", "#compdef decnet-agent-client"),
        ("fish", "complete -c decnet-agent-client"),
    ] {
        let script = output(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        for name in NAMES {
            assert!(script.contains(name), "{shell} completions lack {name}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bash_completes_a_subcommand_from_the_script() {
    let script = output(&["completions", "bash"]);
    // What bash does on `decnet-agent-client topology-a<TAB>`.
    let probe = format!(
        "{script}\nCOMP_WORDS=(decnet-agent-client topology-a); COMP_CWORD=1; \
         COMP_LINE='decnet-agent-client topology-a'; COMP_POINT=${{#COMP_LINE}}; \
         _decnet__agent__client decnet-agent-client topology-a decnet-agent-client; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let replies = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        replies.split_whitespace().collect::<Vec<_>>(),
        ["topology-apply"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What bash's completion function offers for the words of `line` (the
/// last one being completed), run from the script as `complete -F` runs it.
fn bash_completes(script: &str, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let (current, previous) = (words[words.len() - 1], words[words.len() - 2]);
    let probe = format!(
        "{script}\nCOMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT=${{#COMP_LINE}}; \
         _decnet__agent__client decnet-agent-client '{current}' '{previous}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        cword = words.len() - 1,
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut replies: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    replies.sort();
    replies
}

#[test]
fn bash_completes_the_options_of_a_subcommand_and_of_a_nested_one() {
    let script = output(&["completions", "bash"]);
    // `fleet --<TAB>`: fleet's own options and the global ones.
    let fleet = bash_completes(&script, "decnet-agent-client fleet --");
    for option in [
        "--hosts",
        "--concurrency",
        "--deadline",
        "--args",
        "--ca-dir",
    ] {
        assert!(fleet.iter().any(|o| o == option), "fleet: {fleet:?}");
    }
    assert!(
        !fleet.iter().any(|o| o == "--version"),
        "the top level's options, not fleet's: {fleet:?}"
    );
    // A hyphenated subcommand, and a subcommand of a subcommand.
    let apply = bash_completes(&script, "decnet-agent-client topology-apply --h");
    assert_eq!(apply, ["--help", "--host-json", "--hydrated"]);
    let updater = bash_completes(&script, "decnet-agent-client updater ");
    assert!(
        updater.iter().any(|s| s == "health"),
        "updater: {updater:?}"
    );
    let nested = bash_completes(
        &script,
        "decnet-agent-client updater wait-for-release abc --i",
    );
    assert_eq!(nested, ["--interval"], "updater wait-for-release");
}

#[test]
fn the_man_page_documents_the_command_line() {
    let page = output(&["manpage"]);
    assert!(page.contains(".TH decnet-agent-client 1"), "{page}");
    assert!(
        page.contains("Exit status:"),
        "the exit statuses are missing"
    );
    for name in NAMES {
        let roff = name.replace('-', "\\-");
        assert!(
            page.contains(name) || page.contains(&roff),
            "the man page lacks {name}"
        );
    }
}

/// The pages a man page names under SUBCOMMANDS (`decnet\-agent\-client\-fleet(1)`
/// in roff), as file names.
fn pages_named_by(page: &str) -> Vec<String> {
    let text = page.replace("\\-", "-");
    text.lines()
        .filter_map(|line| line.strip_suffix("(1)"))
        .filter(|name| name.starts_with("decnet-agent-client-") && !name.contains(' '))
        .map(|name| format!("{name}.1"))
        .collect()
}

#[test]
fn every_page_a_man_page_names_is_written_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let printed = output(&["manpage"]);
    assert_eq!(
        output(&["manpage", "--dir", dir.path().to_str().unwrap()]),
        "",
        "--dir prints nothing"
    );
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let main = std::fs::read_to_string(dir.path().join("decnet-agent-client.1")).unwrap();
    assert!(main == printed, "`manpage` prints the page --dir writes");

    let mut named = vec!["decnet-agent-client.1".to_string()];
    for page in &written {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH "), "{page}");
        for name in pages_named_by(&text) {
            assert!(written.contains(&name), "{page} names {name}, not written");
            named.push(name);
        }
    }
    named.sort();
    named.dedup();
    assert_eq!(named, written, "a page no page names");
    for page in [
        "decnet-agent-client-fleet.1",
        "decnet-agent-client-identity-ensure.1",
        "decnet-agent-client-updater-wait-for-release.1",
    ] {
        assert!(written.iter().any(|w| w == page), "{page}: {written:?}");
    }
}

#[test]
fn manpage_dir_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("man1");
    let out = Command::new(BIN)
        .args(["manpage", "--dir", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "io");
    assert!(String::from_utf8_lossy(&out.stderr).contains("man1"));
}
