/* spin: loop forever without calling the host; used to test fuel exhaustion and the wall-clock
 * timeout (epoch interruption). The volatile counter keeps the optimizer from removing the loop. */
int main(void) {
    volatile unsigned long n = 0;
    for (;;) n++;
}
