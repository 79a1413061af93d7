//! A copy of this bench running in another role (`--role listener`, `--role writer`), driven over
//! its stdin and stdout one line at a time.

use super::*;

pub(super) struct RoleProcess {
    pub(super) child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// For error messages: `listener`, `writer`.
    role: &'static str,
}

impl RoleProcess {
    /// Starts `--role ROLE ARGS…` and waits for its `READY` line.
    pub(super) fn spawn(role: &'static str, args: &[&str]) -> R<RoleProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", role])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut p = RoleProcess {
            child,
            stdin,
            stdout,
            role,
        };
        let ready = p.line()?;
        if ready != "READY" {
            let _ = p.child.kill();
            return Err(format!("{role} process: {ready}").into());
        }
        Ok(p)
    }

    /// The next line it printed.
    pub(super) fn line(&mut self) -> R<String> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            return Err(format!("{} process exited", self.role).into());
        }
        Ok(s.trim_end().to_string())
    }

    /// Sends one line.
    pub(super) fn send(&mut self, line: &str) -> R<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Sends one line and reads the answer.
    pub(super) fn request(&mut self, line: &str) -> R<String> {
        self.send(line)?;
        self.line()
    }

    /// Sends `last` (its quit command), reads the answer and waits for the process to end.
    pub(super) fn finish(mut self, last: &str) -> R<String> {
        let reply = self.request(last)?;
        self.child.wait()?;
        Ok(reply)
    }
}
