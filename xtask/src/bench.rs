pub fn run(_a: &[String]) -> anyhow::Result<bool> {
    anyhow::bail!("bench: not yet")
}
