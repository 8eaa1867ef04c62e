//! `redis-move init`: writes a runbook from a template, the values it needs asked on a
//! terminal or taken from `--var`, with its vars file and the JSON Schema beside it,
//! then validates what it wrote.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::Exit;
use crate::cli::InitArgs;
use crate::init::{Names, TEMPLATES, Template};
use crate::runbook::VarOverride;
use crate::runbook::diagnostic::HumanStyle;

fn terminal(args: &InitArgs) -> bool {
    !args.no_input && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn ask(label: &str) -> Option<String> {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
}

fn list() -> String {
    TEMPLATES
        .iter()
        .map(|t| format!("  {:<14} {}", t.id, t.summary))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The template asked for, or chosen on the terminal.
fn choose(args: &InitArgs) -> Result<&'static Template, Exit> {
    if let Some(id) = &args.template {
        return crate::init::find(id).ok_or_else(|| {
            let hint = crate::runbook::de::did_you_mean(id, TEMPLATES.iter().map(|t| t.id))
                .map(|m| format!(" (did you mean `{m}`?)"))
                .unwrap_or_default();
            eprintln!("error: no template `{id}`{hint}; there are:\n{}", list());
            Exit::Usage
        });
    }
    if !terminal(args) {
        eprintln!(
            "error: name a template: redis-move init TEMPLATE\n{}",
            list()
        );
        return Err(Exit::Usage);
    }
    eprintln!("Templates:");
    for (i, t) in TEMPLATES.iter().enumerate() {
        eprintln!("  {}. {:<14} {}", i + 1, t.id, t.summary);
    }
    loop {
        let answer = ask("Which one (number or name)? ").ok_or(Exit::Usage)?;
        let chosen = answer
            .parse::<usize>()
            .ok()
            .and_then(|n| TEMPLATES.get(n.wrapping_sub(1)))
            .or_else(|| crate::init::find(&answer));
        if let Some(t) = chosen {
            return Ok(t);
        }
    }
}

/// The vars file beside `out`: `cutover.yaml` -> `cutover.vars.yaml`.
fn vars_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runbook".into());
    out.with_file_name(format!("{stem}.vars.yaml"))
}

/// `redis-move init`.
pub fn init(args: InitArgs, style: HumanStyle) -> Exit {
    let template = match choose(&args) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    let name = args.name.clone().unwrap_or_else(|| {
        args.out
            .as_ref()
            .and_then(|o| o.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| template.id.to_owned())
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        eprintln!("error: `{name}` cannot name a runbook (letters, digits, `-`, `_`, `.`)");
        return Exit::Usage;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
    let vars_file = vars_path(&out);
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let schema = dir.join("runbook.schema.json");
    if !args.force {
        for path in [&out, &vars_file] {
            if path.exists() {
                eprintln!(
                    "error: `{}` exists; give another --out, or --force to replace it",
                    path.display()
                );
                return Exit::Usage;
            }
        }
    }
    // Only vars the template has can be given.
    let known: Vec<String> = {
        let probe = crate::init::runbook_text(template, &names(&name, template, &out, &vars_file));
        let source = crate::runbook::SourceFile::new("template.yaml", probe);
        crate::runbook::load_source(source, &[])
            .runbook
            .map(|r| r.vars.keys().cloned().collect())
            .unwrap_or_default()
    };
    for (var, _) in &args.vars {
        if !known.iter().any(|k| k == var) {
            let hint = crate::runbook::de::did_you_mean(var, known.iter().map(String::as_str))
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            eprintln!(
                "error: `--var {var}=...`: the template `{}` has no var `{var}`{hint}",
                template.id
            );
            return Exit::Usage;
        }
    }
    let interactive = terminal(&args);
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut defaulted = Vec::new();
    if interactive {
        eprintln!(
            "{}: {} (Enter keeps the value in brackets)",
            template.id, template.summary
        );
    }
    for q in template.questions {
        let given = args.vars.iter().rev().find(|(v, _)| v == q.var);
        let value = match given {
            Some((_, value)) => value.clone(),
            None if interactive => match ask(&format!("{} [{}]: ", q.ask, q.default)) {
                Some(answer) if !answer.is_empty() => answer,
                Some(_) => q.default.to_owned(),
                None => return Exit::Usage,
            },
            None => {
                defaulted.push(q.var);
                q.default.to_owned()
            }
        };
        answers.push((q.var.to_owned(), value));
    }
    // Vars given that the template does not ask for go into the vars file too.
    for (var, value) in &args.vars {
        if !answers.iter().any(|(v, _)| v == var) {
            answers.push((var.clone(), value.clone()));
        }
    }
    let names = names(&name, template, &out, &vars_file);
    let runbook = crate::init::runbook_text(template, &names);
    let vars = crate::init::vars_text(template, &names, &answers);
    let schema_text = crate::runbook::schema::schema_json();
    let write = |path: &Path, text: &str| -> Result<(), Exit> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                eprintln!("error: cannot create `{}`: {e}", parent.display());
                Exit::Usage
            })?;
        }
        std::fs::write(path, text).map_err(|e| {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            Exit::Usage
        })
    };
    let unchanged_schema = std::fs::read_to_string(&schema).is_ok_and(|s| s == schema_text);
    for (path, text) in [(&out, runbook.as_str()), (&vars_file, vars.as_str())] {
        if let Err(exit) = write(path, text) {
            return exit;
        }
        println!("{}", path.display());
    }
    if !unchanged_schema {
        if let Err(exit) = write(&schema, &schema_text) {
            return exit;
        }
        println!("{}", schema.display());
    }
    // What was written must validate with its vars, as `plan` will read it.
    let overrides = VarOverride::from_pairs(&answers);
    if let Err(exit) = super::load_one(&out, &overrides, style) {
        eprintln!(
            "error: the runbook written does not validate with these values; fix them in {}",
            vars_file.display()
        );
        return exit;
    }
    if !defaulted.is_empty() {
        eprintln!(
            "note: the template's values were kept for {}: edit {}",
            defaulted.join(", "),
            vars_file.display()
        );
    }
    eprintln!(
        "next: read {out}, then\n  redis-move plan {out} --vars-file {vars}\n  redis-move run {out} --vars-file {vars}",
        out = names.file,
        vars = names.vars_file
    );
    Exit::Done
}

fn names(name: &str, template: &Template, out: &Path, vars_file: &Path) -> Names {
    Names {
        name: name.to_owned(),
        title: template.title.to_owned(),
        file: out.display().to_string(),
        vars_file: vars_file.display().to_string(),
        schema: "./runbook.schema.json".into(),
    }
}
