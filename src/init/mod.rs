//! `redis-move init`'s runbook templates: a commented, valid runbook for a common move,
//! the few values it needs asked (or given as `--var`), written with a vars file beside
//! it. Each template is a runbook whose `vars:` hold production-like defaults; the
//! answers go into the vars file, so that the runbook stays the reviewed template and
//! the vars file says what is particular to this move.

/// A value a template asks for.
#[derive(Clone, Copy, Debug)]
pub struct Question {
    /// The var it fills.
    pub var: &'static str,
    /// What is asked.
    pub ask: &'static str,
    /// The template's own value (in its `vars:`).
    pub default: &'static str,
}

/// A runbook template.
#[derive(Clone, Copy, Debug)]
pub struct Template {
    /// Its name on the command line.
    pub id: &'static str,
    /// What it does, in one line.
    pub summary: &'static str,
    /// The runbook's title, unless one is given.
    pub title: &'static str,
    /// The runbook, with `{{name}}`, `{{title}}`, `{{file}}`, `{{vars_file}}` and
    /// `{{schema}}` to fill.
    pub text: &'static str,
    /// The values it asks for.
    pub questions: &'static [Question],
}

/// Every template, in the order `init` lists them.
pub const TEMPLATES: &[Template] = &[
    Template {
        id: "docker-move",
        summary: "move a Dockerised Redis to another host with replication (no write lost at the cutover)",
        title: "Move Redis to a new Docker host",
        text: include_str!("templates/docker-move.yaml"),
        questions: &[
            Question {
                var: "old_docker",
                ask: "Docker Engine of the host the Redis is on now",
                default: "unix:///var/run/docker.sock",
            },
            Question {
                var: "new_docker",
                ask: "Docker Engine of the new host",
                default: "ssh://deploy@new-host",
            },
            Question {
                var: "old_redis_container",
                ask: "Container of the Redis now",
                default: "redis",
            },
            Question {
                var: "redis_image",
                ask: "Image of the new Redis (the old one's exact version)",
                default: "redis:7.2.5",
            },
            Question {
                var: "old_redis_url",
                ask: "URL redis-move reaches the old Redis at",
                default: "redis://old-host:6379",
            },
            Question {
                var: "new_redis_url",
                ask: "URL redis-move reaches the new Redis at",
                default: "redis://:${secrets.redis_password}@new-host:6379",
            },
            Question {
                var: "old_redis_address",
                ask: "host:port the new Redis reaches the old one at",
                default: "old-host:6379",
            },
            Question {
                var: "new_redis_address",
                ask: "host:port the old Redis reaches the new one at",
                default: "new-host:6379",
            },
            Question {
                var: "app",
                ask: "The application's containers (a name regex)",
                default: "^app-",
            },
            Question {
                var: "app_redis_url",
                ask: "REDIS_URL the application gets",
                default: "redis://:${secrets.redis_password}@new-host:6379",
            },
        ],
    },
    Template {
        id: "managed-copy",
        summary: "move to a managed Redis (Render, Upstash, ElastiCache...) with a verified copy",
        title: "Move Redis to a managed Redis",
        text: include_str!("templates/managed-copy.yaml"),
        questions: &[
            Question {
                var: "source_url",
                ask: "URL of the Redis the application uses now",
                default: "redis://127.0.0.1:6379",
            },
            Question {
                var: "target_memory",
                ask: "Memory of the managed plan",
                default: "1gb",
            },
            Question {
                var: "watch",
                ask: "How long to watch the application afterwards",
                default: "10min",
            },
        ],
    },
    Template {
        id: "rename-keys",
        summary: "rename keys in place (job:* -> step:*): copy, verify, switch, delete with a backup",
        title: "Rename keys in place",
        text: include_str!("templates/rename-keys.yaml"),
        questions: &[
            Question {
                var: "redis_url",
                ask: "URL of the Redis",
                default: "redis://127.0.0.1:6379",
            },
            Question {
                var: "from",
                ask: "Prefix the keys have now",
                default: "job:",
            },
            Question {
                var: "to",
                ask: "Prefix they get",
                default: "step:",
            },
        ],
    },
];

/// The template named `id`.
pub fn find(id: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.id == id)
}

/// Where the files of a runbook made by `init` go, as the runbook names them.
#[derive(Clone, Debug)]
pub struct Names {
    /// The runbook's `name:`.
    pub name: String,
    /// Its title.
    pub title: String,
    /// The runbook file, as a command line would name it.
    pub file: String,
    /// The vars file, likewise.
    pub vars_file: String,
    /// The schema, relative to the runbook.
    pub schema: String,
}

/// The runbook of `template` for `names`.
pub fn runbook_text(template: &Template, names: &Names) -> String {
    template
        .text
        .replace("{{name}}", &names.name)
        .replace("{{title}}", &names.title.replace('"', "'"))
        .replace("{{file}}", &names.file)
        .replace("{{vars_file}}", &names.vars_file)
        .replace("{{schema}}", &names.schema)
}

/// The vars file: each answer (`var: value`), with what was asked above it.
pub fn vars_text(template: &Template, names: &Names, answers: &[(String, String)]) -> String {
    let mut out = format!(
        "# The values of this move for {} (redis-move init {}).\n#   redis-move plan {} --vars-file {}\n",
        names.file, template.id, names.file, names.vars_file
    );
    for (var, value) in answers {
        if let Some(q) = template.questions.iter().find(|q| q.var == var) {
            out.push_str(&format!("# {}\n", q.ask));
        }
        out.push_str(&format!("{var}: {}\n", yaml_string(value)));
    }
    out
}

/// `text` as a YAML double-quoted scalar: every character YAML does not allow
/// printed (controls, U+FFFE, U+FFFF) and every line break escaped, so that the file
/// reads back as exactly `text`.
pub fn yaml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A runbook name made from a file name: what is not a letter, digit, `-` or `_`
/// becomes `-` (`redis.prod` -> `redis-prod`).
pub fn name_from(stem: &str) -> String {
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_start_matches(['-', '_']).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_names_survive_the_files() {
        assert_eq!(
            yaml_string("a\"b\\c\nd\u{7f}e\u{85}"),
            "\"a\\\"b\\\\c\\nd\\u007Fe\\u0085\""
        );
        assert_eq!(name_from("redis.prod"), "redis-prod");
        assert_eq!(name_from(".hidden"), "hidden");
    }

    fn names(id: &str) -> Names {
        Names {
            name: id.into(),
            title: "A title".into(),
            file: format!("{id}.yaml"),
            vars_file: format!("{id}.vars.yaml"),
            schema: "runbook.schema.json".into(),
        }
    }

    /// Every template is a valid runbook without a warning, and each question's
    /// default is the template's own value of that var.
    #[test]
    fn every_template_is_valid_and_asks_for_vars_it_has() {
        for template in TEMPLATES {
            let text = runbook_text(template, &names(template.id));
            let source = crate::runbook::SourceFile::new(format!("{}.yaml", template.id), text);
            let loaded = crate::runbook::load_source(source, &[]);
            assert_eq!(
                loaded.diagnostics.diagnostics.len(),
                0,
                "{}: {:?}",
                template.id,
                loaded.diagnostics.diagnostics
            );
            let runbook = loaded.runbook.expect("valid");
            assert_eq!(runbook.name, template.id);
            for q in template.questions {
                let raw = template
                    .text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{}: ", q.var)))
                    .unwrap_or_else(|| panic!("{}: no var {}", template.id, q.var));
                assert_eq!(
                    raw.trim_matches('"'),
                    q.default,
                    "{}: the default of {}",
                    template.id,
                    q.var
                );
            }
        }
    }
}
