//! The few redis commands the weather app sends, in the redis protocol
//! (RESP2): arrays of bulk strings out, one reply in.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None`: redis's nil.
    Bulk(Option<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis connection failed")]
    Io(#[from] std::io::Error),
    #[error("redis sent something that is not RESP2: {0:?}")]
    Protocol(String),
    #[error("redis answered an error: {0}")]
    Redis(String),
}

/// The command as redis reads it.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply (no arrays: none of our commands gets one).
pub async fn read_reply(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Reply, Error> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err(Error::Protocol("connection closed".into()));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest.parse().map(Reply::Integer).map_err(|_| Error::Protocol(line.to_owned())),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| Error::Protocol(line.to_owned()))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data).await?;
            data.truncate(len as usize);
            String::from_utf8(data).map(|s| Reply::Bulk(Some(s))).map_err(|e| Error::Protocol(e.to_string()))
        }
        _ => Err(Error::Protocol(line.to_owned())),
    }
}

/// Sends one command and reads its reply; a redis error becomes `Err`.
pub async fn command<S>(stream: &mut S, args: &[&str]) -> Result<Reply, Error>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    stream.write_all(&encode(args)).await?;
    stream.flush().await?;
    match read_reply(stream).await? {
        Reply::Error(message) => Err(Error::Redis(message)),
        reply => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(encode(&["GET", "currentweather"]), b"*2\r\n$3\r\nGET\r\n$14\r\ncurrentweather\r\n");
    }

    #[tokio::test]
    async fn replies_of_each_kind_are_read() {
        let mut input: &[u8] = b"+OK\r\n$5\r\nhe\r\nl\r\n$-1\r\n:42\r\n-ERR wrong\r\n";
        let mut reader = tokio::io::BufReader::new(&mut input);
        assert_eq!(read_reply(&mut reader).await.unwrap(), Reply::Simple("OK".into()));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Reply::Bulk(Some("he\r\nl".into())));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Reply::Bulk(None));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Reply::Integer(42));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Reply::Error("ERR wrong".into()));
        assert!(read_reply(&mut reader).await.is_err());
    }
}
