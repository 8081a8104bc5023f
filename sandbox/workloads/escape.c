/* escape: try to reach the host: open files by absolute and relative path, list the root
 * directory. Prints one line per attempt ("open /etc/passwd: <error>" or "... OPENED") and exits
 * with the number of attempts that succeeded (0 in a sandbox without preopened directories). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int try_open(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        printf("open %s: %s\n", path, strerror(errno));
        return 0;
    }
    printf("open %s: OPENED\n", path);
    close(fd);
    return 1;
}

int main(void) {
    int escaped = 0;
    escaped += try_open("/etc/passwd", O_RDONLY);
    escaped += try_open("../../../../etc/passwd", O_RDONLY);
    escaped += try_open("/tmp/wasm-escape-probe", O_WRONLY | O_CREAT);
    DIR *d = opendir("/");
    if (d == NULL) {
        printf("opendir /: %s\n", strerror(errno));
    } else {
        printf("opendir /: OPENED\n");
        closedir(d);
        escaped++;
    }
    return escaped;
}
