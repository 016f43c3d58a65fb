/* capcheck: prints what privilege the calling process really has, so tests can
 * assert on it from inside a container. Installed plain, setuid-root and with a
 * security.capability xattr in the test images. Built static: images have no libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    printf("uid=%u euid=%u suid=%u gid=%u egid=%u sgid=%u\n",
           (unsigned)ruid, (unsigned)euid, (unsigned)suid,
           (unsigned)rgid, (unsigned)egid, (unsigned)sgid);

    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        printf("status=unreadable errno=%d\n", errno);
    } else {
        char line[512];
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "Cap", 3) == 0 || strncmp(line, "NoNewPrivs", 10) == 0)
                fputs(line, stdout);
        }
        fclose(f);
    }

    /* The attack a setuid binary would make: become root for good. */
    if (setuid(0) == 0)
        printf("setuid0=ok\n");
    else
        printf("setuid0=%s\n", strerror(errno));
    return 0;
}
