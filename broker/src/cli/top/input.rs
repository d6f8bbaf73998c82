//! Keys from the terminal, read straight from standard input with
//! `poll(2)` and `read(2)` (the terminal is in raw mode: one byte a key).
//!
//! Not crossterm's event reader: once the terminal is hung up, a read
//! returns end-of-file at once, and crossterm 0.29's reader loops on it
//! forever inside `event::poll`, never returning; `herald top` would spin
//! instead of exiting. Here end-of-file, `EIO` and `POLLHUP` mean the
//! terminal is gone.

use std::time::Duration;

/// What the terminal said.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing, or keys that mean nothing here.
    Nothing,
    /// `q`, `Q` or Ctrl-C.
    Quit,
    /// The terminal is gone (hung up, closed).
    Gone,
}

/// Waits up to `timeout` for keys on standard input.
///
/// # Errors
/// `poll` or `read` failing for another reason than an interruption or a
/// terminal that went away.
pub fn wait(timeout: Duration) -> std::io::Result<Input> {
    let mut pfd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::Interrupted => Ok(Input::Nothing),
            _ => Err(e),
        };
    }
    if r == 0 {
        return Ok(Input::Nothing);
    }
    if pfd.revents & libc::POLLIN == 0 {
        // POLLHUP, POLLERR or POLLNVAL without data.
        return Ok(Input::Gone);
    }
    let mut buf = [0u8; 64];
    // SAFETY: reading into a buffer of the length given.
    let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    if n == 0 {
        return Ok(Input::Gone);
    }
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) => Ok(Input::Nothing),
            Some(libc::EIO) => Ok(Input::Gone),
            _ => Err(e),
        };
    }
    Ok(keys(&buf[..n as usize]))
}

/// What a run of key bytes means.
fn keys(bytes: &[u8]) -> Input {
    if bytes.iter().any(|b| matches!(b, b'q' | b'Q' | 0x03)) {
        Input::Quit
    } else {
        Input::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_keys() {
        assert_eq!(keys(b"q"), Input::Quit);
        assert_eq!(keys(&[0x03]), Input::Quit);
        assert_eq!(keys(b"\x1b[A"), Input::Nothing);
        assert_eq!(keys(b"x"), Input::Nothing);
    }
}
