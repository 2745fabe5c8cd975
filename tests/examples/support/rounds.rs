//! The rounds of a benchmark example that sets the hosts beside a raw NATS peer: each round's
//! two rates, printed as they come, and the ratio of their medians.

/// Rates in signals per second, one raw and one through the hosts per round.
#[derive(Default)]
pub struct Rounds {
    raw: Vec<f64>,
    hosts: Vec<f64>,
}

impl Rounds {
    /// Notes and prints round `round`'s rates.
    pub fn record(&mut self, round: usize, raw: f64, hosts: f64) {
        println!("round {round}: raw {raw:.0}/s, hosts {hosts:.0}/s");
        self.raw.push(raw);
        self.hosts.push(hosts);
    }

    /// Prints the medians and the hosts' share of the raw rate.
    pub fn report(self) {
        let (r, h) = (median(self.raw), median(self.hosts));
        println!(
            "median: raw {r:.0}/s, hosts {h:.0}/s, hosts/raw {:.2}",
            h / r
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
