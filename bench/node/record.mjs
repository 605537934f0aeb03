// What a Node worker ran, kept in memory (a write per job would slow the peer down)
// and written out once, after a graceful stop, for the harness's exactly-once check.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

export const nowSeconds = () => (performance.timeOrigin + performance.now()) / 1000;

export class Recorder {
  constructor(dir, stamp) {
    this.dir = dir;
    this.stamp = stamp;
    this.ids = [];
    this.stamps = [];
  }

  job(id) {
    if (this.stamp) this.stamps.push(`${id} ${nowSeconds().toFixed(6)}`);
    this.ids.push(String(id));
  }

  dump() {
    writeFileSync(join(this.dir, `ids.${process.pid}`), this.ids.join("\n") + "\n");
    if (this.stamp) writeFileSync(join(this.dir, `stamps.${process.pid}`), this.stamps.join("\n") + "\n");
  }

  ready() {
    writeFileSync(join(this.dir, `ready.${process.pid}`), "");
  }
}
