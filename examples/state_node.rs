//! A state node embedded in your own program, in a dozen lines.
//!
//! `cargo run --example state_node -- 127.0.0.1:9092 redis://127.0.0.1:6379/`
//! Runs until Enter is pressed (or stdin closes), then drains, commits and exits.

fn main() -> distcache::Result<()> {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let redis = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let node = distcache::StateNode::builder()
        .kafka_brokers(brokers)
        .redis_url(redis)
        .start()?;
    println!("state node running; press Enter to stop");
    let _ = std::io::stdin().read_line(&mut String::new());
    node.shutdown();
    println!("{:?}", node.metrics());
    Ok(())
}
