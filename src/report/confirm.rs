//! Questions to the person at the terminal. This module owns `dialoguer`.

use std::io;

/// Asks `prompt` on stderr and returns whether the answer typed is exactly `expected`: a typed
/// word, not a y/n a finger can hit by habit, for steps that replace something.
pub fn typed(prompt: &str, expected: &str) -> io::Result<bool> {
    let answer: String = dialoguer::Input::new()
        .with_prompt(prompt)
        .allow_empty(true)
        .interact_text()
        .map_err(io::Error::other)?;
    Ok(answer.trim() == expected)
}
