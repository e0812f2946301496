use multiprocess::*;
fn f(name: String, c: Connection) -> Result<()> {
    c.send(&format!("hello {name} from {} ({})", getpid(), current_process().name()))?;
    Ok(())
}
fn bad() {
    panic!("boom")
}
fn code() -> std::process::ExitCode {
    std::process::ExitCode::from(8)
}
fn main() -> Result<()> {
    init();
    for m in get_all_start_methods() {
        let t = std::time::Instant::now();
        let (a, b) = pipe()?;
        let mut p = get_context(m).process(f, ("john".to_string(), b));
        p.start()?;
        println!("{m}: {}", a.recv::<String>()?);
        p.join()?;
        println!("{m}: exit {:?} in {:?}", p.exitcode(), t.elapsed());
        let mut p = get_context(m).process(bad, ());
        p.start()?;
        p.join()?;
        println!("{m}: panic exit {:?}", p.exitcode());
        let mut p = get_context(m).process(code, ());
        p.start()?;
        p.join()?;
        println!("{m}: code exit {:?}", p.exitcode());
    }
    Ok(())
}
