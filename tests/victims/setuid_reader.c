/* A stand-in for `su` at its password prompt: installed setuid root, started by an ordinary user,
 * it says who it is and then waits reading its terminal. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	char c;

	printf("ready uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
