//! `redis-move init`: writes a runbook from a template, the values it needs asked on a
//! terminal or taken from `--var`, with its vars file and the JSON Schema beside it,
//! then validates what it wrote.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::Exit;
use crate::cli::InitArgs;
use crate::init::{Names, TEMPLATES, Template};
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
    let name = match &args.name {
        Some(name) if crate::runbook::validate::is_id(name) => name.clone(),
        Some(name) => {
            eprintln!(
                "error: `{name}` cannot name a runbook: a letter or digit, then letters, digits, `-` and `_` (it names the state directory)"
            );
            return Exit::Usage;
        }
        None => args
            .out
            .as_ref()
            .and_then(|o| o.file_stem())
            .map(|s| crate::init::name_from(&s.to_string_lossy()))
            .filter(|n| crate::runbook::validate::is_id(n))
            .unwrap_or_else(|| template.id.to_owned()),
    };
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
    // Vars given that the template does not ask for go into the vars file too (the
    // last given, as for those it asks).
    for (var, value) in &args.vars {
        match answers.iter_mut().find(|(v, _)| v == var) {
            Some(answer) if !template.questions.iter().any(|q| q.var == var) => {
                answer.1 = value.clone()
            }
            Some(_) => {}
            None => answers.push((var.clone(), value.clone())),
        }
    }
    let names = names(&name, template, &out, &vars_file);
    let runbook = crate::init::runbook_text(template, &names);
    let vars = crate::init::vars_text(template, &names, &answers);
    let schema_text = crate::runbook::schema::schema_json();
    // Written and checked in a directory of its own beside them first: what lands is a
    // runbook that validates, without a warning, with the vars file as written.
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create `{}`: {e}", dir.display());
        return Exit::Usage;
    }
    let staging = match tempfile::Builder::new()
        .prefix(".redis-move-init-")
        .tempdir_in(dir)
    {
        Ok(staging) => staging,
        Err(e) => {
            eprintln!("error: cannot write into `{}`: {e}", dir.display());
            return Exit::Usage;
        }
    };
    let file_name = |p: &Path| p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let staged_runbook = staging.path().join(file_name(&out));
    let staged_vars = staging.path().join(file_name(&vars_file));
    for (path, text) in [
        (&staged_runbook, runbook.as_str()),
        (&staged_vars, vars.as_str()),
    ] {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return Exit::Usage;
        }
    }
    if !super::validates_cleanly(&staged_runbook, &staged_vars, style) {
        eprintln!(
            "error: with these values the runbook would not validate without a warning (above); nothing was written"
        );
        return Exit::Usage;
    }
    for (staged, path) in [(&staged_runbook, &out), (&staged_vars, &vars_file)] {
        if let Err(e) = std::fs::rename(staged, path) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return Exit::Usage;
        }
        println!("{}", path.display());
    }
    match std::fs::read_to_string(&schema) {
        Ok(existing) if existing == schema_text => {}
        Ok(_) if !args.force => eprintln!(
            "note: kept `{}`, which differs from this redis-move's schema (--force replaces it; `redis-move schema` prints it)",
            schema.display()
        ),
        _ => match std::fs::write(&schema, &schema_text) {
            Ok(()) => println!("{}", schema.display()),
            Err(e) => eprintln!("warning: cannot write `{}`: {e}", schema.display()),
        },
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
