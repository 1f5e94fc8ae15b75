//! Gemma's chat template: the prompt text a list of chat messages becomes, as Gemma 3's
//! own Jinja template renders it (a system message is prepended to the first user turn;
//! `assistant` is called `model`; roles must alternate, starting with the user).

use super::api::{Content, Message};
use super::error::ApiError;

/// Renders `messages` with the generation prompt for the model's turn appended. The BOS
/// token is part of the text (`<bos>`), so the result is encoded without adding another.
pub fn render(messages: &[Message]) -> Result<String, ApiError> {
    let (system, turns) = match messages.first() {
        Some(first) if first.role == "system" => (Some(text_of(first, 0)?), &messages[1..]),
        _ => (None, messages),
    };
    if turns.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "give at least one user message",
        ));
    }
    let mut prompt = String::from("<bos>");
    for (i, message) in turns.iter().enumerate() {
        let index = i + usize::from(system.is_some());
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if message.role != expected {
            return Err(ApiError::bad_param(
                format!("messages[{index}].role"),
                format!(
                    "`{}` where `{expected}` was expected: after an optional system message, \
                     roles must alternate user/assistant/user/...",
                    message.role
                ),
            ));
        }
        let role = if message.role == "assistant" {
            "model"
        } else {
            "user"
        };
        prompt.push_str("<start_of_turn>");
        prompt.push_str(role);
        prompt.push('\n');
        if i == 0
            && let Some(system) = &system
        {
            prompt.push_str(system.trim());
            prompt.push_str("\n\n");
        }
        prompt.push_str(text_of(message, index)?.trim());
        prompt.push_str("<end_of_turn>\n");
    }
    prompt.push_str("<start_of_turn>model\n");
    Ok(prompt)
}

/// The text of a message: its string, or its text parts joined.
fn text_of(message: &Message, index: usize) -> Result<String, ApiError> {
    match &message.content {
        Content::Text(text) => Ok(text.clone()),
        Content::Parts(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match (part.kind.as_str(), &part.text) {
                ("text", Some(text)) => Ok(text.as_str()),
                _ => Err(ApiError::bad_param(
                    format!("messages[{index}].content[{j}]"),
                    "only text parts (`{\"type\": \"text\", \"text\": ...}`) are supported",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::api::ContentPart;

    fn message(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            content: Content::Text(text.into()),
        }
    }

    #[test]
    fn renders_gemma_turns_with_the_system_prompt_in_the_first_user_turn() {
        let rendered = render(&[
            message("system", "Be brief."),
            message("user", " Hi "),
            message("assistant", "Hello."),
            message("user", "Name a colour."),
        ])
        .unwrap();
        assert_eq!(
            rendered,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn rejects_bad_roles_and_parts_by_field() {
        let err = render(&[message("user", "a"), message("user", "b")]).unwrap_err();
        assert!(
            matches!(err, ApiError::BadRequest { param: Some(p), .. } if p == "messages[1].role")
        );
        let err = render(&[message("system", "only")]).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest { param: Some(p), .. } if p == "messages"));
        let image = Message {
            role: "user".into(),
            content: Content::Parts(vec![ContentPart {
                kind: "image_url".into(),
                text: None,
            }]),
        };
        let err = render(&[image]).unwrap_err();
        assert!(
            matches!(err, ApiError::BadRequest { param: Some(p), .. } if p == "messages[0].content[0]")
        );
    }
}
