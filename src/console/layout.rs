//! The console's page frame: head with the inline style sheet, navigation,
//! the operator's messages, and the small form pieces every page uses. All
//! text goes through maud, which escapes it; nothing here is raw HTML but
//! the style sheet below, which is ours.

use std::sync::OnceLock;

use base64::Engine;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest, Sha256};

use super::form::Form;
use super::session::Flash;

/// The whole style sheet, inline: the console loads nothing from anywhere.
/// Mobile first; tables scroll sideways inside their box on a narrow screen.
const CSS: &str = r#"
:root{--fg:#1f2430;--muted:#667085;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--accent:#2754c5;--ok:#157347;--okbg:#e8f5ee;--err:#b42318;--errbg:#fdecea;--bar:#2754c5;--bar2:#0f8a6a}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#141a2a;color:#fff}
.bar-top{max-width:1200px;margin:0 auto;display:flex;flex-wrap:wrap;align-items:center;gap:4px 18px;padding:10px 16px}
.brand{font-weight:700;letter-spacing:.02em;margin-right:8px}
nav{display:flex;flex-wrap:wrap;gap:2px 4px;flex:1}
nav a{color:#cfd6e6;text-decoration:none;padding:6px 10px;border-radius:6px}
nav a:hover{background:#263049;color:#fff}
nav a.on{background:#2f3b5c;color:#fff}
header form{margin:0}
header button{background:transparent;color:#cfd6e6;border:1px solid #3b4766}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:4px 0 14px}
h2{font-size:16px;margin:0 0 10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:16px}
.grid{display:grid;gap:16px;grid-template-columns:1fr}
.grid>*{min-width:0}
@media(min-width:900px){.grid.two{grid-template-columns:1fr 1fr}}
.stats{display:flex;flex-wrap:wrap;gap:10px 28px;margin:0}
.stats div{min-width:110px}
.stats dt{color:var(--muted);font-size:13px}
.stats dd{margin:0;font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
.scroll+form{margin-top:12px;padding-top:12px;border-top:1px solid var(--line)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);white-space:nowrap;vertical-align:middle}
th{font-size:13px;color:var(--muted);font-weight:600}
td.num,th.num{text-align:right}
td.wrap{white-space:normal;word-break:break-word;min-width:180px}
tr:last-child td{border-bottom:0}
a{color:var(--accent)}
.muted{color:var(--muted)}
.tag{display:inline-block;font-size:12px;padding:1px 8px;border-radius:10px;background:#eef1f6;color:#344054}
.tag.off{background:var(--errbg);color:var(--err)}
.tag.on{background:var(--okbg);color:var(--ok)}
.flash{border-radius:8px;padding:10px 14px;margin-bottom:14px;border:1px solid}
.flash.ok{background:var(--okbg);border-color:#b7e0c8;color:#0c4a2b}
.flash.err{background:var(--errbg);border-color:#f5c2bd;color:#7a1a12}
.secret{display:block;margin-top:6px;padding:8px 10px;background:#fff;border:1px dashed #8fb9a2;border-radius:6px;font:14px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all;user-select:all}
form.inline{display:inline-flex;flex-wrap:wrap;gap:6px;align-items:center;margin:0}
form.stack{display:flex;flex-wrap:wrap;gap:8px 10px;align-items:flex-end}
label{display:flex;flex-direction:column;font-size:13px;color:var(--muted);gap:3px}
label.check{flex-direction:row;align-items:center;gap:6px;color:var(--fg);font-size:14px;padding-bottom:8px}
input,select,button{font:inherit;padding:6px 10px;border:1px solid #c9ced8;border-radius:6px;background:#fff;color:var(--fg)}
input[type=checkbox]{padding:0;width:16px;height:16px}
input:focus,select:focus,button:focus{outline:2px solid #9db4ee;outline-offset:1px}
button{cursor:pointer;background:var(--accent);border-color:var(--accent);color:#fff}
button.quiet{background:#fff;color:var(--fg);border-color:#c9ced8}
button.danger{background:#fff;color:var(--err);border-color:#e9a39c}
.buttons{display:flex;gap:6px}
.actions{display:flex;flex-wrap:wrap;gap:16px 28px}
.actions section{min-width:240px}
figure.chart{margin:0 0 8px}
figure.chart figcaption{font-size:13px;color:var(--muted);margin-bottom:4px}
svg{display:block;width:100%;height:auto;max-height:220px}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{font-size:11px;fill:var(--muted)}
svg .bar{fill:var(--bar)}
.credits svg .bar{fill:var(--bar2)}
.login{max-width:380px;margin:12vh auto 0}
.login form{display:flex;flex-direction:column;gap:12px}
.login input{width:100%}
@media(max-width:600px){svg .axis{font-size:19px}.bar-top{gap:6px 10px;padding:8px 10px}nav{order:3;flex:1 1 100%}header form{margin-left:auto}main{padding:10px}.card{padding:12px}h1{font-size:20px}.stats dd{font-size:19px}.actions section{min-width:0;width:100%}}
"#;

/// The `Content-Security-Policy` of every console page: nothing may load,
/// no script may run, and only our own style sheet (by its hash) applies.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// The navigation's pages; `None` for pages outside it (login, errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Users,
    Routes,
    Webhooks,
    Jobs,
}

/// What every signed-in page shows besides its body.
pub struct Frame<'a> {
    pub csrf: &'a str,
    pub flashes: &'a [Flash],
    /// The refused form being shown again: its fields keep what was typed.
    pub refill: Option<&'a Form>,
}

impl Frame<'_> {
    /// What the refused form held in this field, for its `value`.
    pub fn typed(&self, field: &str) -> Option<&str> {
        self.refill.and_then(|f| f.get(field))
    }
}

/// A full signed-in page.
pub fn page(title: &str, nav: Option<Nav>, frame: &Frame<'_>, body: Markup) -> Markup {
    let link = |to: Nav, href: &str, text: &str| {
        html! { a.on[nav == Some(to)] href=(href) { (text) } }
    };
    let content = html! {
        header {
            div.bar-top {
                span.brand { "creditgate" }
                nav {
                    (link(Nav::Overview, "/console/", "Overview"))
                    (link(Nav::Users, "/console/users", "Users"))
                    (link(Nav::Routes, "/console/routes", "Routes"))
                    (link(Nav::Webhooks, "/console/webhooks", "Webhooks"))
                    (link(Nav::Jobs, "/console/jobs", "Jobs"))
                }
                form method="post" action="/console/logout" {
                    (csrf_field(frame.csrf))
                    button.quiet type="submit" { "Log out" }
                }
            }
        }
        main {
            @for f in frame.flashes { (flash(f)) }
            (body)
        }
    };
    document(title, content)
}

/// A page without navigation (login, the admin-off notice).
pub fn bare(title: &str, body: Markup) -> Markup {
    document(title, html! { main { (body) } })
}

fn document(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · creditgate console" }
                style { (PreEscaped(CSS)) }
            }
            body { (content) }
        }
    }
}

pub fn flash(f: &Flash) -> Markup {
    html! {
        div.flash.ok[f.ok].err[!f.ok] role=(if f.ok { "status" } else { "alert" }) {
            (f.text)
            @if let Some(secret) = &f.secret {
                code.secret data-secret { (secret) }
                span.muted { "Shown this once: copy it now." }
            }
        }
    }
}

pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A one-button form that POSTs to `action`.
pub fn button(csrf: &str, action: &str, text: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(csrf))
            button class=(class) type="submit" { (text) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_in_a_page_is_escaped() {
        let flashes = [Flash::error("<script>alert(1)</script>")];
        let frame = Frame {
            refill: None,
            csrf: "\"><x>",
            flashes: &flashes,
        };
        let html = page("<b>", None, &frame, html! { p { ("a&b") } }).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("value=\"&quot;&gt;&lt;x&gt;\""));
        assert!(html.contains("a&amp;b"));
    }

    #[test]
    fn the_policy_allows_exactly_our_style_sheet() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!csp.contains("unsafe"));
        // The digest is over the very text the page embeds.
        let html = bare("t", html! {}).into_string();
        assert!(html.contains(&format!("<style>{CSS}</style>")));
    }

    #[test]
    fn every_signed_in_page_has_a_logout_form_with_the_csrf_token() {
        let frame = Frame {
            refill: None,
            csrf: "tok",
            flashes: &[],
        };
        let html = page("x", Some(Nav::Users), &frame, html! {}).into_string();
        assert!(html.contains("action=\"/console/logout\""));
        assert!(html.contains("name=\"csrf\" value=\"tok\""));
        assert!(html.contains("class=\"on\" href=\"/console/users\""));
    }
}
