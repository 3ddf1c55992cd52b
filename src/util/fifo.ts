/**
 * A first-in, first-out queue on one array: `shift` moves a head index
 * instead of shifting the array, lets go of what it hands out at once, and
 * drops the consumed front once it is half the array (at least FRONT_DROP
 * slots), so that a queue that never drains (one always has a write in
 * progress, refusals arrive as fast as they fall due) does not grow with
 * everything that ever passed through it.
 */

const FRONT_DROP = 64;

export class Fifo<T> {
  private items: Array<T | undefined> = [];
  private head = 0;

  /** Items waiting. */
  get size(): number {
    return this.items.length - this.head;
  }

  /** Array slots held, the consumed front not yet dropped included (what the queue costs). */
  get held(): number {
    return this.items.length;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, left in place; undefined when empty. */
  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  /** Takes the oldest item; undefined when empty. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= FRONT_DROP && this.head * 2 >= this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    return item;
  }
}
