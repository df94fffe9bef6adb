//! Email templates, kept in `actors/templates/email/` (a subject, a plain-text
//! body and an HTML alternative per template) and rendered with minijinja.
//! HTML is auto-escaped; amounts arrive already formatted from minor units.

use minijinja::{AutoEscape, Environment};

/// The templates mart sends.
#[cfg(test)]
pub(crate) const TEMPLATES: &[&str] = &[
    "welcome",
    "order_placed",
    "order_paid",
    "order_shipped",
    "order_delivered",
    "order_cancelled",
    "order_expired",
];

macro_rules! files {
    ($($name:literal),*) => {
        &[$(
            (concat!($name, ".subject"), include_str!(concat!("../../templates/email/", $name, ".subject"))),
            (concat!($name, ".txt"), include_str!(concat!("../../templates/email/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../../templates/email/", $name, ".html"))),
        )*]
    };
}

const FILES: &[(&str, &str)] = files!(
    "welcome",
    "order_placed",
    "order_paid",
    "order_shipped",
    "order_delivered",
    "order_cancelled",
    "order_expired"
);

/// One rendered email.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendered {
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

/// All templates, parsed once.
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub(crate) fn load() -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        for (name, source) in FILES {
            env.add_template(name, source)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(Self { env })
    }

    pub(crate) fn render(
        &self,
        template: &str,
        context: &serde_json::Value,
    ) -> Result<Rendered, minijinja::Error> {
        let part = |ext: &str| {
            self.env
                .get_template(&format!("{template}.{ext}"))
                .and_then(|t| t.render(minijinja::value::Serde(context)))
        };
        Ok(Rendered {
            subject: part("subject")?.trim().to_owned(),
            text: part("txt")?,
            html: part("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_html_is_escaped() {
        let templates = Templates::load().expect("load");
        let context = serde_json::json!({
            "username": "<script>", "email": "a@b.c", "order_id": "o-1", "total": "25.00 USD",
            "expires_at": "2026-01-01 00:00", "refund_due": true,
            "lines": [{"name": "Mug", "quantity": 2, "unit_price": "12.50 USD", "line_total": "25.00 USD"}],
        });
        for name in TEMPLATES {
            let rendered = templates.render(name, &context).expect("render");
            assert!(
                !rendered.subject.is_empty() && !rendered.text.is_empty(),
                "{name}"
            );
            assert!(!rendered.html.contains("<script>"), "{name} escapes HTML");
        }
        let placed = templates.render("order_placed", &context).expect("placed");
        assert!(
            placed.text.contains("2 x Mug at 12.50 USD = 25.00 USD")
                && placed.text.contains("Total: 25.00 USD")
        );
        assert!(
            templates
                .render("order_cancelled", &context)
                .expect("c")
                .text
                .contains("refunded")
        );
    }
}
